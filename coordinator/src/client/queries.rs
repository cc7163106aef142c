//! The unary questions a client asks about jobs, workers and artifacts.

use foldtrain_proto::{JobId, pb};

use super::connection::{Client, job_request};
use super::error::ClientError;

impl Client {
    /// The full status of one job.
    pub async fn job(&self, job: &JobId) -> Result<pb::JobStatus, ClientError> {
        self.rpc()
            .get_job(job_request(job))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.error("get job", Some(job), s))
    }

    /// Every job, without fold details, oldest first as the coordinator lists them.
    pub async fn jobs(&self) -> Result<Vec<pb::JobStatus>, ClientError> {
        self.rpc()
            .list_jobs(pb::ListJobsRequest {})
            .await
            .map(|r| r.into_inner().jobs)
            .map_err(|s| self.error("list jobs", None, s))
    }

    /// Cancels a job; its status afterwards.
    pub async fn cancel(&self, job: &JobId) -> Result<pb::JobStatus, ClientError> {
        self.rpc()
            .cancel_job(job_request(job))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.error("cancel job", Some(job), s))
    }

    /// Deletes a finished job and the blobs only it referred to; what was freed.
    pub async fn delete(&self, job: &JobId) -> Result<pb::DeleteJobResponse, ClientError> {
        self.rpc()
            .delete_job(job_request(job))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.error("delete job", Some(job), s))
    }

    /// Every worker the coordinator knows, alive or not.
    pub async fn workers(&self) -> Result<Vec<pb::WorkerStatus>, ClientError> {
        self.rpc()
            .list_workers(pb::ListWorkersRequest {})
            .await
            .map(|r| r.into_inner().workers)
            .map_err(|s| self.error("list workers", None, s))
    }

    /// The relative paths of a job's result files, sorted.
    pub async fn artifacts(&self, job: &JobId) -> Result<Vec<String>, ClientError> {
        self.rpc()
            .list_artifacts(job_request(job))
            .await
            .map(|r| r.into_inner().paths)
            .map_err(|s| self.error("list artifacts", Some(job), s))
    }
}
