//! The naming rules shared by the data plane and the control plane.

/// True for a tenant name: 2 to 63 characters of `[a-z0-9-]`, starting
/// with a letter or digit.
pub fn is_tenant_name(name: &str) -> bool {
    (2..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

/// True for a table name of `min_len` to 255 characters of
/// `[A-Za-z0-9_.-]` (the data plane takes 1, the control plane 3).
pub fn is_table_name(name: &str, min_len: usize) -> bool {
    (min_len..=crate::keys::MAX_TABLE_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        for ok in ["ab", "demo", "a-1", "0x"] {
            assert!(is_tenant_name(ok), "{ok}");
        }
        for bad in ["a", "-ab", "Ab", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_tenant_name(bad), "{bad}");
        }
        assert!(is_table_name("t", 1) && !is_table_name("t", 3));
        assert!(is_table_name("A.b-c_9", 3) && is_table_name(&"x".repeat(255), 3));
        for bad in ["a/b", "a b", "#12", "é12", &"x".repeat(256)] {
            assert!(!is_table_name(bad, 1), "{bad}");
        }
    }
}
