//! Who owns a bucket or an object: the key that created it. A root key (one without a
//! policy) acts for the account (`acl::OWNER_ID`); a scoped key is its own owner, so ACL
//! answers, listings' Owner and CreateBucket's BucketAlreadyOwnedByYou name the right one.
//! The access check (`access.rs`) puts the requester's owner id in the request's
//! extensions; anonymous writers own nothing (their objects answer as the bucket owner's).

use super::acl::OWNER_ID;

/// The requester's owner id, as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerId(pub String);

impl OwnerId {
    /// The owner id of a signed request's key.
    pub fn of_key(access_key: &str, scoped: bool) -> OwnerId {
        OwnerId(if scoped { access_key } else { OWNER_ID }.to_owned())
    }
}

/// The requester's owner id, when the request was signed.
pub fn requester(ext: &http::Extensions) -> Option<String> {
    ext.get::<OwnerId>().map(|o| o.0.clone())
}

/// Who a resource answers as owned by: its recorded owner, else the account.
pub fn shown(recorded: Option<&str>) -> &str {
    recorded.unwrap_or(OWNER_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_keys_act_for_the_account_and_scoped_keys_for_themselves() {
        assert_eq!(OwnerId::of_key("AKROOT", false).0, OWNER_ID);
        assert_eq!(OwnerId::of_key("AKSCOPED", true).0, "AKSCOPED");
        let mut ext = http::Extensions::new();
        assert_eq!(requester(&ext), None);
        ext.insert(OwnerId::of_key("AKSCOPED", true));
        assert_eq!(requester(&ext).as_deref(), Some("AKSCOPED"));
        assert_eq!(shown(None), OWNER_ID);
        assert_eq!(shown(Some("AKSCOPED")), "AKSCOPED");
    }
}
