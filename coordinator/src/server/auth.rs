//! Who may call what: each `Coordinator` method needs a user's or a worker's token,
//! compared in constant time. The check lives in the proto crate so that workers
//! enforce exactly the same rule.

pub use foldtrain_proto::runtime::auth::{Role, RoleGate, RoleTokens, coordinator_policy};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CoordinatorError;

    #[test]
    fn a_rejection_reads_like_the_coordinator_error() {
        let status = RoleTokens::default()
            .with(Role::User, Some("s3cret"))
            .check(&[Role::User], "GetJob", b"wrong")
            .unwrap_err();
        let ours = tonic::Status::from(CoordinatorError::Unauthenticated);
        assert_eq!(
            (status.code(), status.message()),
            (ours.code(), ours.message())
        );
    }
}
