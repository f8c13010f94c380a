//! Near-name suggestions ("did you mean ...?") for a name that is not known: a struct the
//! kernel's DWARF does not define, a function that is neither in the kernel nor in a module.
//! The one suggester every caller uses.

/// Up to `max` names close to `wanted`: by edit distance, ignoring case (typos such as
/// `sk_buf`), or containing it (`skb` finds `sk_buff_head` only if nothing closer exists),
/// closest first, ties broken by name.
pub fn near_names<'a, I>(wanted: &str, known: I, max: usize) -> Vec<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let wanted_lower = wanted.to_ascii_lowercase();
    let limit = (wanted.len() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = known
        .into_iter()
        // The distance is at least the difference in length, and a name shorter than
        // `wanted` cannot contain it: such names cannot match, and kernels know tens of
        // thousands of function names.
        .filter(|k| k.len() + limit >= wanted.len())
        .filter_map(|k| {
            let lower = k.to_ascii_lowercase();
            let d = edit_distance(&wanted_lower, &lower);
            if d <= limit {
                Some((d, k))
            } else if wanted.len() >= 3 && lower.contains(&wanted_lower) {
                // Containing the query is a weaker match than a close typo.
                Some((limit + 1 + (k.len() - wanted.len()), k))
            } else {
                None
            }
        })
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    scored
        .into_iter()
        .map(|(_, k)| k.to_owned())
        .take(max)
        .collect()
}

/// Levenshtein distance over bytes (kernel identifiers are ASCII).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_and_substring() {
        let known = ["sk_buff", "sk_buff_head", "net_device", "iphdr"];
        assert_eq!(near_names("sk_buf", known, 3)[0], "sk_buff");
        assert_eq!(near_names("ipdhr", known, 3), vec!["iphdr"]);
        assert!(near_names("zzzzzz", known, 3).is_empty());
    }

    #[test]
    fn function_names() {
        let c = ["reject_tg", "reject_tg6", "ip_forward", "ipt_do_table"];
        assert_eq!(
            near_names("rejet_tg", c, 3),
            vec!["reject_tg", "reject_tg6"]
        );
        assert!(near_names("zzzzzz", c, 3).is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
