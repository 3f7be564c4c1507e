//! `RunCampaign`: an operator's campaign run inside serve, attached to the operator's
//! stream. Serve runs it with its own fleet, signer and store, exactly as the scheduler
//! runs one, and streams its events back. A Cancel, the stream's end (the CLI's Ctrl-C,
//! a crash, a lost connection) and serve's own stop all cancel the run, which then
//! reverts what it started; the run never outlives its operator unattended. An emergency
//! stop cancels it too, and while latched no run starts.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Status, Streaming};
use tracing::Instrument as _;
use troop_proto::serve_pb::{self, run_control, run_update};

use super::access::{Operators, call_span};
use crate::campaign::Campaign;
use crate::campaign::events::{Progress, RunEvent};
use crate::campaign::runner::run_campaign;
use crate::campaign::scheduler::campaigns_dir;
use crate::config::Role;
use crate::wire::run::{event_out, outcome_out};

pub type Updates = UnboundedReceiverStream<Result<serve_pb::RunUpdate, Status>>;

type Sender = mpsc::UnboundedSender<Result<serve_pb::RunUpdate, Status>>;

/// Sends each event to the operator; one who went away no longer gets them.
struct Forwarded(Sender);

impl Progress for Forwarded {
    fn event(&self, event: RunEvent) {
        let update = serve_pb::RunUpdate {
            body: Some(run_update::Body::Event(event_out(event))),
        };
        let _ = self.0.send(Ok(update));
    }
}

pub async fn run(
    operators: &Operators,
    request: Request<Streaming<serve_pb::RunControl>>,
) -> Result<Updates, Status> {
    let span = call_span("run a campaign", &request);
    let peer = request.extensions().get().cloned();
    let mut control = request.into_inner();
    let start = match control.message().await? {
        Some(serve_pb::RunControl {
            body: Some(run_control::Body::Start(start)),
        }) => start,
        _ => {
            return Err(Status::invalid_argument(
                "a campaign run's first message must be StartRun",
            ));
        }
    };
    let (call, needs) = if start.dry_run {
        ("dry-run a campaign", Role::Viewer)
    } else {
        ("run a campaign", Role::Operator)
    };
    let operator = operators.authorize(peer.as_ref(), call, needs)?;
    span.record("troop.operator", &operator);
    if !start.dry_run {
        operators.check_latch(&operator, call)?;
    }
    // Relative paths in it mean what they mean for serve's own campaigns.
    let name = Path::new(&start.file_name)
        .file_name()
        .unwrap_or("campaign.toml".as_ref());
    let path = campaigns_dir(&operators.fleet.config).join(name);
    let campaign = Campaign::parse(&start.campaign_toml, &path)
        .map_err(|error| Status::invalid_argument(error.to_string()))?;
    tracing::info!(%operator, campaign = %campaign.name, dry_run = start.dry_run, "an operator runs a campaign");

    let (updates, received) = mpsc::unbounded_channel();
    let (cancel, cancelled) = watch::channel(None::<String>);
    let watcher = tokio::spawn(watch_operator(
        control,
        updates.clone(),
        operators.stopping.clone(),
        operators.latch.subscribe(),
        cancel,
        operator.clone(),
    ));
    let fleet = operators.fleet.clone();
    operators.runs.spawn(
        async move {
            let progress = Arc::new(Forwarded(updates.clone()));
            let result = run_campaign(
                &fleet,
                &campaign,
                start.dry_run,
                None,
                cancelled,
                progress,
                &operator,
            )
            .await;
            watcher.abort();
            let update = match result {
                Ok(report) => Ok(serve_pb::RunUpdate {
                    body: Some(run_update::Body::Outcome(outcome_out(&report))),
                }),
                Err(error) => Err(Status::failed_precondition(format!("{error:#}"))),
            };
            let _ = updates.send(update);
        }
        .instrument(span),
    );
    Ok(UnboundedReceiverStream::new(received))
}

/// Cancels the run on the operator's Cancel, when their stream ends, or when serve stops.
async fn watch_operator(
    mut control: Streaming<serve_pb::RunControl>,
    updates: Sender,
    mut stopping: watch::Receiver<bool>,
    mut latch: watch::Receiver<Option<crate::store::LatchRecord>>,
    cancel: watch::Sender<Option<String>>,
    operator: String,
) {
    let reason = loop {
        tokio::select! {
            message = control.message() => match message {
                Ok(Some(serve_pb::RunControl { body: Some(run_control::Body::Cancel(c)) })) => {
                    let reason: String = c.reason.chars().filter(|c| !c.is_control()).take(200).collect();
                    break format!("cancelled by {operator}: {reason}");
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break format!("{operator}'s connection to serve ended"),
            },
            () = updates.closed() => break format!("{operator}'s connection to serve ended"),
            _ = stopping.wait_for(|stop| *stop) => break "troop serve is stopping".to_string(),
            Ok(()) = latch.changed() => {
                let stopped = latch.borrow_and_update().as_ref().map(crate::latch::refusal);
                if let Some(stopped) = stopped {
                    break stopped;
                }
            }
        }
    };
    tracing::warn!(%operator, %reason, "cancelling an operator's campaign run");
    let _ = cancel.send(Some(reason));
}
