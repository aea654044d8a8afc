//! ACLs, as far as Pixelport has them: an owner with FULL_CONTROL, and anonymous read
//! (`public-read`) on a bucket (the same public-read choice as the admin UI's toggle) or on
//! one object. Canned ACLs, the equivalent grant headers and AccessControlPolicy bodies
//! all come down to that; grants to other users are refused clearly, never ignored.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Result};

/// The group every anonymous requester belongs to.
pub const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
/// The account: the owner of what the root keys create, and of buckets and objects made
/// before owners were recorded (ListBuckets answers it).
pub const OWNER_ID: &str = "pixelport";

/// Whether `id` names `owner` (the resource's recorded owner) or the account.
fn is_owner(id: &str, owner: &str) -> bool {
    id == OWNER_ID || id == owner
}

/// S3's Owner element for an owner id.
pub fn owner(id: &str) -> Owner {
    Owner {
        display_name: Some(id.to_owned()),
        id: Some(id.to_owned()),
    }
}

fn unsupported(what: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NotImplemented,
        format!(
            "{what} is not supported: Pixelport's ACLs are the owner's FULL_CONTROL plus, \
             optionally, anonymous READ (public-read). Use scoped access keys for other users."
        ),
    )
}

/// Whether a canned ACL (`x-amz-acl`) means anonymous read; `None` when none was given.
pub fn canned(acl: Option<&str>) -> S3Result<Option<bool>> {
    match acl {
        None => Ok(None),
        Some("private" | "bucket-owner-read" | "bucket-owner-full-control") => Ok(Some(false)),
        Some("public-read") => Ok(Some(true)),
        Some(
            other @ ("public-read-write" | "authenticated-read" | "aws-exec-read"
            | "log-delivery-write"),
        ) => Err(unsupported(&format!("The canned ACL `{other}`"))),
        Some(other) => Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("`{other}` is not a canned ACL"),
        )),
    }
}

/// Whether `x-amz-grant-*` headers mean anonymous read. Only `x-amz-grant-read` to AllUsers
/// and `x-amz-grant-full-control` to the owner (`owner`, or the account) are understood.
pub fn grant_headers(
    read: Option<&str>,
    full_control: Option<&str>,
    others: bool,
    owner: &str,
) -> S3Result<Option<bool>> {
    if others {
        return Err(unsupported("Granting WRITE, READ_ACP or WRITE_ACP"));
    }
    let owner_only = |v: &str| {
        v.split(',').map(str::trim).all(|g| {
            g.strip_prefix("id=")
                .is_some_and(|id| is_owner(id.trim_matches('"'), owner))
        })
    };
    if let Some(fc) = full_control
        && !owner_only(fc)
    {
        return Err(unsupported("FULL_CONTROL for anyone but the owner"));
    }
    match read {
        None => Ok(full_control.map(|_| false)),
        Some(r) => {
            let grantees: Vec<&str> = r.split(',').map(str::trim).collect();
            if grantees
                .iter()
                .all(|g| g.trim_start_matches("uri=").trim_matches('"') == ALL_USERS)
            {
                Ok(Some(true))
            } else {
                Err(unsupported("READ for anyone but AllUsers"))
            }
        }
    }
}

/// Whether an AccessControlPolicy body means anonymous read (FULL_CONTROL goes to `owner`,
/// or the account).
pub fn from_policy(policy: &AccessControlPolicy, owner: &str) -> S3Result<bool> {
    let mut public = false;
    for g in policy.grants.iter().flatten() {
        let (Some(grantee), Some(permission)) = (&g.grantee, &g.permission) else {
            return Err(S3Error::with_message(
                S3ErrorCode::MalformedACLError,
                "every Grant needs a Grantee and a Permission",
            ));
        };
        let all_users = grantee.uri.as_deref() == Some(ALL_USERS);
        let to_owner = grantee.type_.as_str() == Type::CANONICAL_USER
            && grantee.id.as_deref().is_some_and(|id| is_owner(id, owner));
        match permission.as_str() {
            Permission::FULL_CONTROL if to_owner => {}
            Permission::READ if all_users => public = true,
            p => {
                return Err(unsupported(&format!(
                    "Granting {p} to {}",
                    grantee
                        .uri
                        .as_deref()
                        .or(grantee.id.as_deref())
                        .unwrap_or("that grantee")
                )));
            }
        }
    }
    Ok(public)
}

/// The owner and grants answered by GetBucketAcl and GetObjectAcl, for a resource owned by
/// `owner_id`.
pub fn policy(owner_id: &str, public: bool) -> (Owner, Grants) {
    let mut grants = vec![Grant {
        grantee: Some(Grantee {
            display_name: Some(owner_id.into()),
            email_address: None,
            id: Some(owner_id.into()),
            type_: Type::from_static(Type::CANONICAL_USER),
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    }];
    if public {
        grants.push(Grant {
            grantee: Some(Grantee {
                display_name: None,
                email_address: None,
                id: None,
                type_: Type::from_static(Type::GROUP),
                uri: Some(ALL_USERS.into()),
            }),
            permission: Some(Permission::from_static(Permission::READ)),
        });
    }
    (owner(owner_id), grants)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_acls_are_private_public_read_or_refused() {
        assert_eq!(canned(None).unwrap(), None);
        assert_eq!(canned(Some("private")).unwrap(), Some(false));
        assert_eq!(canned(Some("public-read")).unwrap(), Some(true));
        let e = canned(Some("public-read-write")).unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::NotImplemented);
        assert_eq!(
            canned(Some("shared")).unwrap_err().code(),
            &S3ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn policies_round_trip_and_other_grants_are_refused() {
        for (who, public) in [(OWNER_ID, false), (OWNER_ID, true), ("AKSCOPED", true)] {
            let (owner, grants) = policy(who, public);
            assert_eq!(owner.id.as_deref(), Some(who));
            let p = AccessControlPolicy {
                grants: Some(grants),
                owner: Some(owner),
            };
            assert_eq!(from_policy(&p, who).unwrap(), public);
            // Another key's FULL_CONTROL is not the owner's.
            if who != OWNER_ID {
                assert!(from_policy(&p, "AKOTHER").is_err());
            }
        }
        let (owner, mut grants) = policy(OWNER_ID, false);
        grants.push(Grant {
            grantee: Some(Grantee {
                display_name: None,
                email_address: None,
                id: Some("someone-else".into()),
                type_: Type::from_static(Type::CANONICAL_USER),
                uri: None,
            }),
            permission: Some(Permission::from_static(Permission::READ)),
        });
        let p = AccessControlPolicy {
            grants: Some(grants),
            owner: Some(owner),
        };
        assert_eq!(
            from_policy(&p, OWNER_ID).unwrap_err().code(),
            &S3ErrorCode::NotImplemented
        );
    }

    #[test]
    fn grant_headers() {
        let all = format!("uri={ALL_USERS}");
        let own = "AKOWNER";
        assert_eq!(
            super::grant_headers(Some(&all), None, false, own).unwrap(),
            Some(true)
        );
        for fc in ["id=pixelport", "id=AKOWNER", "id=\"AKOWNER\""] {
            assert_eq!(
                super::grant_headers(None, Some(fc), false, own).unwrap(),
                Some(false),
                "{fc}"
            );
        }
        assert!(super::grant_headers(None, Some("id=bob"), false, own).is_err());
        assert!(super::grant_headers(Some("id=bob"), None, false, own).is_err());
        assert!(super::grant_headers(None, None, true, own).is_err());
        assert_eq!(super::grant_headers(None, None, false, own).unwrap(), None);
    }
}
