//! S3 naming rules, pure: bucket names (the AWS general-purpose rules) and key length.

/// S3's limit on key length in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Checks a bucket name against the S3 rules; the error says which rule failed.
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    if !(3..=63).contains(&name.len()) {
        return Err("bucket names must be between 3 and 63 characters long".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err("bucket names may contain only lowercase letters, digits, `.` and `-`".into());
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !(first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric()) {
        return Err("bucket names must begin and end with a letter or digit".into());
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Err("bucket names must not contain `..`, `.-` or `-.`".into());
    }
    if name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok()) {
        return Err("bucket names must not be formatted as an IP address".into());
    }
    if name.starts_with("xn--")
        || name.starts_with("sthree-")
        || name.ends_with("-s3alias")
        || name.ends_with("--ol-s3")
    {
        return Err("bucket names must not use a prefix or suffix reserved by S3".into());
    }
    Ok(())
}

pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the object key must not be empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "the object key is {} bytes; the limit is {MAX_KEY_LEN}",
            key.len()
        ));
    }
    // S3's XML cannot carry U+0000, so no listing could name such a key; the catalog's
    // version index relies on its absence too.
    if key.contains('\0') {
        return Err("the object key must not contain the NUL character (U+0000)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_aws_rules() {
        for ok in ["abc", "my-bucket", "my.bucket.2", "a1b", &"a".repeat(63)] {
            assert!(validate_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "ABC",
            "-abc",
            "abc-",
            "a..b",
            "a.-b",
            "192.168.1.1",
            "xn--abc",
            "under_score",
            &"a".repeat(64),
            "a b",
        ] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_bounded() {
        assert!(validate_key("").is_err());
        assert!(validate_key(&"k".repeat(1024)).is_ok());
        assert!(validate_key(&"k".repeat(1025)).is_err());
        assert!(validate_key("../x").is_ok());
    }
}
