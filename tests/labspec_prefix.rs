//! `with_prefix` (parallel copies of a lab) and the lab's JSON form (saved lab state).

use umldbg::lab::builtin::article_lab;
use umldbg::lab::spec::{LabSpec, Problem};

#[test]
fn prefix_applies_to_lab_name_and_umids_only() {
    let lab = article_lab();
    let copy = lab.with_prefix("t1-");
    assert_eq!(copy.name, "t1-article");
    let umids: Vec<&str> = copy.machines.iter().map(|m| m.umid.as_str()).collect();
    assert_eq!(
        umids,
        ["t1-client-uml-A", "t1-router-uml-R", "t1-client-uml-B"]
    );
    // Hostnames, domains and addresses live inside the lab's own namespace and guests.
    for (a, b) in lab.machines.iter().zip(&copy.machines) {
        assert_eq!(a.hostname, b.hostname);
        assert_eq!(a.interfaces, b.interfaces);
        assert_eq!(a.routes, b.routes);
    }
    assert_eq!(lab.domains, copy.domains);
    copy.validate().unwrap();
    // Two copies share no umid.
    let other = lab.with_prefix("t2-");
    assert!(
        copy.machines
            .iter()
            .all(|m| other.machine(&m.umid).is_none())
    );
}

#[test]
fn prefix_that_makes_umids_too_long_is_caught_by_validate() {
    let copy = article_lab().with_prefix(&"p".repeat(60));
    let e = copy.validate().unwrap_err();
    assert!(
        matches!(
            e.problem(),
            Some(Problem::BadLabName { .. }) | Some(Problem::BadUmid { .. })
        ),
        "{e}"
    );
}

#[test]
fn json_round_trip() {
    let lab = article_lab();
    let json = serde_json::to_string(&lab).unwrap();
    assert!(json.contains("\"192.168.30.1/24\""), "{json}");
    let back: LabSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, lab);
}
