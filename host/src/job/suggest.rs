//! Suggestions for a newcomer's typos in a job file: the nearest valid key or value.

/// Adds the nearest valid name to serde's "unknown field `x`, expected one of `a`, `b`"
/// (and "unknown variant"): `did you mean `parallelism`?`, when one is close enough to be
/// a typo of it.
pub fn with_suggestion(message: String) -> String {
    let Some(unknown) = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|prefix| message.split(prefix).nth(1)?.split('`').next())
    else {
        return message;
    };
    let Some(expected) = message.split("expected ").nth(1) else { return message };
    let candidates = expected.lines().next().unwrap_or_default().split('`').skip(1).step_by(2);
    let nearest = candidates
        .map(|candidate| (edit_distance(&unknown.to_lowercase(), &candidate.to_lowercase()), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance);
    match nearest {
        Some((_, candidate)) => format!("{}; did you mean `{candidate}`?", message.trim_end()),
        None => message,
    }
}

/// Levenshtein distance (insertions, deletions, substitutions) between two names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_name_within_a_third_of_its_length() {
        assert_eq!(edit_distance("paralelism", "parallelism"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        let message = "unknown field `paralelism`, expected one of `uid`, `parallelism`".to_string();
        assert!(with_suggestion(message).ends_with("; did you mean `parallelism`?"));
        let message = "unknown field `zzz`, expected one of `uid`, `parallelism`".to_string();
        assert_eq!(with_suggestion(message.clone()), message);
        assert_eq!(with_suggestion("invalid type".into()), "invalid type");
    }
}
