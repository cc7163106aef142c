//! Bearer-token authentication for every RPC, compared in constant time. The check lives
//! in the proto crate so that workers enforce exactly the same rule.

pub use foldtrain_proto::runtime::auth::BearerAuth;

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;
    use crate::error::CoordinatorError;

    #[test]
    fn a_rejection_reads_like_the_coordinator_error() {
        let status = BearerAuth::new(Some("s3cret"))
            .call(tonic::Request::new(()))
            .unwrap_err();
        let ours = tonic::Status::from(CoordinatorError::Unauthenticated);
        assert_eq!(
            (status.code(), status.message()),
            (ours.code(), ours.message())
        );
    }
}
