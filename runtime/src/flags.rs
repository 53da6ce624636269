//! Flag value syntax shared by every component: upstream flags are Go `pflag`s, so booleans and
//! durations use Go's spellings.

/// strconv.ParseBool, which pflag uses for bool flags (`--flag`, `--flag=false`, `--flag=0`, …).
/// Use with `num_args = 0..=1, require_equals = true, default_missing_value = "true"`.
pub fn parse_go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean value {value:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_bool_spellings_parse_and_others_are_refused() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Ok(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Ok(false));
        }
        assert!(parse_go_bool("yes").is_err());
    }
}
