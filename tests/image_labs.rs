//! Machines with their own root (issue: machine images): labs whose machines boot from images
//! built by mmdebstrap, each with a copy-on-write file of its own, inside the same sandbox as
//! hostfs machines; the article's debug scenario and FRR routing labs on real UML machines.

mod common;

use std::path::{Path, PathBuf};

use std::time::Duration;

use common::*;

fn image_path(name: &str) -> PathBuf {
    let o = umldbg(&["image", "build", name]);
    assert!(o.status.success(), "image build {name}: {}", stderr(&o));
    let o = umldbg(&["image", "path", name]);
    assert!(o.status.success(), "{}", stderr(&o));
    PathBuf::from(stdout(&o).trim())
}

#[test]
fn article_scenario_in_image_mode_stops_at_reject_tg_with_the_packet() {
    kernel();
    let img = image_path("kathara/base");
    let meta = std::fs::metadata(&img).unwrap();
    let (len, mtime) = (meta.len(), meta.modified().unwrap());

    let o = umldbg(&["lab", "up", "--prefix", "imga-", "--image", "kathara/base"]);
    let lab = Lab::with_name("imga-article", "imga-");
    assert!(o.status.success(), "{}", stderr(&o));
    // The root is the image, through the machine's own COW file.
    let root = lab.must("R", "grep ' / ' /proc/mounts");
    assert!(
        root.contains(" / ext4 "),
        "the root is not the image's ext4: {root}"
    );
    let cow = umldbg::lab::state::lab_dir("imga-article").join("cow/imga-router-uml-R/disk.cow");
    assert!(cow.exists(), "no COW file at {}", cow.display());

    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    let s = Attached::new(&lab.umid("R"));
    s.ok(&["load", "ipt_REJECT"]);
    s.ok(&["break", "reject_tg"]);
    let mut ping = spawn_sh(&lab.umid("A"), "ping -c 5 -i 0.5 -W 5 192.168.20.2");
    let stop = s.json(&["wait", "--timeout", "60"]);
    assert_eq!(stop["function"], "reject_tg", "{stop}");
    assert_eq!(stop["skb"]["ipv4"]["dst"], "192.168.20.2", "{stop}");
    s.ok(&["detach"]);
    drop(s);

    // The guest writes land in its COW file, never in the image; the COW goes with the lab.
    lab.must("R", "echo x > /etc/umldbg-image-write && sync");
    drop(lab);
    assert!(!cow.exists(), "{} survived lab down", cow.display());
    let after = std::fs::metadata(&img).unwrap();
    assert_eq!((after.len(), after.modified().unwrap()), (len, mtime));
    let o = umldbg(&["image", "path", "kathara/base"]);
    assert!(
        o.status.success(),
        "the image is no longer valid: {}",
        stderr(&o)
    );
    let _ = ping.kill();
    let _ = ping.wait();
}

#[test]
fn image_mode_guest_cannot_reach_host_files() {
    kernel();
    image_path("kathara/base");
    let t = format!("umldbg-canary-img-{}", std::process::id());
    let canary = PathBuf::from(format!("/root/{t}"));
    std::fs::write(&canary, "secret").unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(canary.clone());
    let o = umldbg(&["lab", "up", "--prefix", "imgs-", "--image", "kathara/base"]);
    let lab = Lab::with_name("imgs-article", "imgs-");
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, out) = lab.sh(
        "B",
        &format!(
            "mkdir -p /tmp/h; mount -t hostfs none /tmp/h -o / && echo MOUNTED; \
             cat /tmp/h/root/{t} /tmp/h/etc/shadow; touch /tmp/h/etc/{t} /tmp/h/{t}; \
             mkdir -p /tmp/p; mount -t hostfs none /tmp/p -o /proc; ls -d /tmp/p/{me}",
            me = std::process::id()
        ),
    );
    assert!(out.contains("MOUNTED"), "{out}");
    assert!(!out.contains("secret"), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("root:")), "{out}");
    assert!(!Path::new(&format!("/etc/{t}")).exists(), "{out}");
    assert!(!Path::new(&format!("/{t}")).exists(), "{out}");
    assert!(out.contains("No such file"), "host pid visible: {out}");
}

/// Wait until `vtysh -c CMD` on `m` prints `want`.
fn wait_vtysh(lab: &Lab, m: &str, cmd: &str, want: &str) {
    wait_for(
        &format!("{m}: `{cmd}` to show {want}"),
        Duration::from_secs(90),
        || {
            let (_, out) = lab.sh(m, &format!("vtysh -c '{cmd}'"));
            out.contains(want).then_some(())
        },
    );
}

#[test]
fn bgp_lab_with_frr_images_reaches_established_and_routes_between_hosts() {
    kernel();
    image_path("kathara/frr");
    let lab = kathara_up("bgp", "ibgp-");
    wait_vtysh(
        &lab,
        "r1",
        "show bgp neighbors 10.0.12.2",
        "BGP state = Established",
    );
    wait_vtysh(&lab, "r1", "show ip route 10.0.2.0/24", "bgp");
    let out = lab.must("pc1", "ping -c 2 -W 3 10.0.2.1");
    assert!(out.contains("ttl=62"), "{out}");
}

#[test]
fn ospf_lab_with_frr_images_learns_the_other_lan() {
    kernel();
    image_path("kathara/frr");
    let lab = kathara_up("ospf", "iosp-");
    wait_vtysh(&lab, "r1", "show ip ospf neighbor", "Full");
    wait_vtysh(&lab, "r1", "show ip route 10.0.2.0/24", "ospf");
    let out = lab.must("pc1", "ping -c 2 -W 3 10.0.2.1");
    assert!(out.contains("ttl=62"), "{out}");
}
