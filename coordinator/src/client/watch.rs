//! Following a job live over the WatchJob stream, riding out coordinator restarts and
//! network drops by polling GetJob with backoff until it answers again.

use std::time::{Duration, Instant};

use foldtrain_proto::{JobId, pb};

use super::connection::{Client, job_request};
use super::error::ClientError;
use super::progress::WatchEvents;

/// First wait before asking a coordinator that went away again; doubles up to the max.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// How long a watch waits for a lost coordinator unless told otherwise.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// Follows `job` until it ends and returns its final status; fails when the coordinator
/// stays unreachable for `give_up_after`, or refuses the request.
pub async fn watch_job(
    client: &Client,
    job: &JobId,
    give_up_after: Duration,
    events: &dyn WatchEvents,
) -> Result<pb::JobStatus, ClientError> {
    let mut outage = Outage {
        since: None,
        delay: FIRST_RETRY,
    };
    loop {
        let lost = match follow(client, job, events).await {
            Followed::Ended(status) => return Ok(status),
            Followed::Lost { heard, error } => {
                if !error.is_transient() {
                    return Err(error);
                }
                if heard {
                    outage = Outage {
                        since: None,
                        delay: FIRST_RETRY,
                    };
                }
                error
            }
        };
        events.note(&format!(
            "lost the coordinator ({lost}); retrying in {} ms",
            outage.delay.as_millis()
        ));
        let status = outage
            .wait_for_answer(client, job, give_up_after, lost)
            .await?;
        events.note("the coordinator is back");
        events.status(&status);
        if status.state().is_terminal() {
            return Ok(status);
        }
    }
}

/// How long the coordinator has been unreachable and the next wait before asking.
struct Outage {
    since: Option<Instant>,
    delay: Duration,
}

impl Outage {
    /// Polls GetJob with backoff until the coordinator answers; `lost` is why it was lost.
    async fn wait_for_answer(
        &mut self,
        client: &Client,
        job: &JobId,
        give_up_after: Duration,
        lost: ClientError,
    ) -> Result<pb::JobStatus, ClientError> {
        let since = *self.since.get_or_insert_with(Instant::now);
        loop {
            if since.elapsed() >= give_up_after {
                return Err(ClientError::GaveUp {
                    url: client.url().to_string(),
                    job: job.clone(),
                    seconds: give_up_after.as_secs(),
                    why: lost.to_string(),
                });
            }
            tokio::time::sleep(self.delay).await;
            self.delay = (self.delay * 2).min(MAX_RETRY);
            match client.job(job).await {
                Ok(status) => return Ok(status),
                Err(e) if e.is_transient() => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

enum Followed {
    /// The job reached a final state.
    Ended(pb::JobStatus),
    /// The stream broke or could not open; `heard` says whether anything arrived first.
    Lost { heard: bool, error: ClientError },
}

/// Reads one WatchJob stream to its end.
async fn follow(client: &Client, job: &JobId, events: &dyn WatchEvents) -> Followed {
    let mut stream = match client.rpc().watch_job(job_request(job)).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return Followed::Lost {
                heard: false,
                error: client.error("watch job", Some(job), status),
            };
        }
    };
    let mut heard = false;
    let broken = loop {
        match stream.message().await {
            Ok(Some(update)) => {
                heard = true;
                if let (Some(fold), Some(epoch)) = (update.fold, &update.epoch) {
                    events.epoch(fold, epoch);
                }
                if let Some(status) = update.status {
                    events.status(&status);
                    if status.state().is_terminal() {
                        return Followed::Ended(status);
                    }
                }
            }
            // A stream that ends early is a coordinator going away, as a broken one is.
            Ok(None) => {
                break tonic::Status::unavailable("the watch stream ended before the job did");
            }
            Err(status) => break status,
        }
    };
    Followed::Lost {
        heard,
        error: client.error("watch job", Some(job), broken),
    }
}
