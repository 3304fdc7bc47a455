//! One worker thread per TUN queue: read a batch, run each packet through the worker's own
//! [`Pipeline`], write back what it forwards and what it builds, hand records to the log queue.
//!
//! The loop:
//!
//! 1. read up to [`BATCH`] packets without blocking; for each, `process` and act on the verdict
//!    (packets the pipeline transmits first: they are held segments released in order, RSTs,
//!    ICMP errors, which all precede the packet in hand);
//! 2. when a new policy was stored (the store's generation moved), `reevaluate` (flows the new
//!    policy denies are cut);
//! 3. run due timers (`handle_timeout`);
//! 4. publish the counters (at most every [`PUBLISH_EVERY`]);
//! 5. when the queue ran dry, keep reading while the last packet is less than the busy-polling
//!    window old (`[gateway] busy_poll_us`), yielding the CPU between reads; past the window,
//!    sleep in `poll` until a packet, the stop signal, the next pipeline deadline or
//!    [`IDLE_TICK`], whichever is first. The tick bounds how late an idle worker sees a new
//!    policy.
//!
//! Why busy polling: a sleeping worker is woken by the kernel for each packet of a quiet flow
//! (a request, then its answer a few tens of microseconds later), and on a virtual machine that
//! wake-up, often of an idle vCPU, costs more than everything the gateway does with the packet.
//! A worker that saw a packet a moment ago is likely to see the next one soon; past the window
//! it sleeps, so an idle gateway costs no CPU (`tests/e2e_busy_poll.rs`).
//!
//! Blocking threads with `poll` rather than tokio tasks: the loop does one system call per packet
//! and nothing else asynchronous, so a reactor adds only overhead (and on two cores, a thread hop).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use policy_engine::PolicyStore;

use crate::dns::resolver::{AnswerInbox, DnsClient};
use crate::dns::DnsAnswer;
use crate::dns::DnsFailure;
use crate::fastpath::WorkerLink;
use crate::logsink::LogSender;
use crate::metrics::{DnsEvent, FlowTableState, LocalCounters, WorkerCounters};
use crate::pipeline::{
    Disposition, DropReason, FastPathEvent, FastPathRequest, Output, PacketMeta, Pipeline,
};
use crate::record::DecisionRecord;
use crate::sys::tun::{TunQueue, WakeFd, MAX_READ, VNET_HDR_LEN};

/// Packets read before timers, policy and counters get a look.
pub const BATCH: usize = 64;
/// Longest sleep of an idle worker.
pub const IDLE_TICK: Duration = Duration::from_millis(200);
/// Counter publication interval.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// The wall-clock anchor is refreshed this often, so clock steps reach the records.
pub const REANCHOR_EVERY: Duration = Duration::from_secs(10);

/// Everything a worker owns.
#[derive(Debug)]
pub struct Worker {
    pub index: usize,
    pub queue: TunQueue,
    pub pipeline: Pipeline,
    pub store: Arc<PolicyStore>,
    pub log: LogSender<DecisionRecord>,
    pub counters: Arc<WorkerCounters>,
    pub wake: Arc<WakeFd>,
    pub stop: Arc<AtomicBool>,
    /// How long a worker whose queue ran dry keeps reading before it sleeps (zero: sleep at
    /// once). See [`Worker::run`].
    pub busy_poll: Duration,
    /// The DNS check's lookups: where names go and answers come back.
    pub dns: Option<WorkerDns>,
    /// The worker's end of the kernel fast path, when it runs.
    pub fastpath: Option<WorkerLink>,
}

/// A worker's link to the resolver thread.
#[derive(Debug)]
pub struct WorkerDns {
    pub client: DnsClient,
    pub inbox: AnswerInbox,
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker {index}: TUN queue: {error}")]
    Tun { index: usize, error: io::Error },
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Worker {
    /// Runs until the stop flag is set (then ends every flow, logging their flow-end records) or
    /// the queue fails.
    pub fn run(mut self) -> Result<(), WorkerError> {
        let mut buf = vec![0u8; MAX_READ];
        let mut out = Output::default();
        let mut local = self.counters.local();
        let start = Instant::now();
        self.pipeline.set_clock_anchor(start, epoch_ms());
        let mut marks = Marks {
            seen_generation: self.store.generation(),
            last_anchor: start,
            last_publish: start,
            last_packet: start,
        };
        let result = loop {
            let batch = self.read_batch(&mut buf, &mut out, &mut local);
            let mut drained = batch.drained;
            if let Some(e) = batch.failure {
                if is_fatal(&e) {
                    break Err(WorkerError::Tun {
                        index: self.index,
                        error: e,
                    });
                }
                tracing::debug!(worker = self.index, error = %e, "TUN read failed");
                drained = true;
            }
            let now = Instant::now();
            if batch.saw_packet {
                marks.last_packet = now;
            }
            // Busy polling: a queue that carried traffic a moment ago is read again at once
            // instead of sleeping, because waking a sleeping thread costs more than the packet.
            let spinning = drained && now.duration_since(marks.last_packet) < self.busy_poll;
            let publish = drained && !spinning;
            self.housekeeping(now, publish, &mut marks, &mut out, &mut local);
            if self.stop.load(Ordering::Acquire) {
                break Ok(());
            }
            if spinning {
                // Let a thread this one just woke (the receiver of the packet it wrote) run
                // first when it shares the CPU.
                std::thread::yield_now();
            } else if drained {
                match self.sleep(now) {
                    Ok(true) => break Ok(()),
                    Ok(false) => {}
                    Err(e) => break Err(e),
                }
            }
        };
        self.finish(&mut out, &mut local);
        result
    }

    /// Step 1: reads up to [`BATCH`] frames without blocking and processes each.
    fn read_batch(&mut self, buf: &mut [u8], out: &mut Output, local: &mut LocalCounters) -> Batch {
        let mut batch = Batch {
            drained: false,
            saw_packet: false,
            failure: None,
        };
        for _ in 0..BATCH {
            match self.queue.read(buf) {
                Ok(n) => {
                    self.packet(&buf[..n], out, local);
                    batch.saw_packet = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    batch.drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    local.tun_read_error();
                    batch.failure = Some(e);
                    break;
                }
            }
        }
        batch
    }

    /// Steps 2 to 4: a policy change, due timers, the counters (every [`PUBLISH_EVERY`], or
    /// now when `publish_now`: the worker is about to sleep), and the wall-clock anchor.
    fn housekeeping(
        &mut self,
        now: Instant,
        publish_now: bool,
        marks: &mut Marks,
        out: &mut Output,
        local: &mut LocalCounters,
    ) {
        self.dns_answers(now, out, local);
        if let Some(link) = &mut self.fastpath {
            // What the fast path reports: hand-offs done or refused, kernel traffic, flow ends,
            // flows taken back. Bounded by the inbox.
            link.retry();
            let mut any = false;
            while let Some(r) = link.next_report() {
                self.pipeline
                    .fastpath_event(now, r.tuple, r.cookie, r.event, out);
                any = true;
            }
            if any {
                self.emit(out, local);
            }
        }
        let generation = self.store.generation();
        if generation != marks.seen_generation {
            marks.seen_generation = generation;
            self.pipeline.reevaluate(now, out);
            self.emit(out, local);
        }
        if self.pipeline.next_timeout().is_some_and(|t| t <= now) {
            self.pipeline.handle_timeout(now, out);
            self.emit(out, local);
        }
        if now.duration_since(marks.last_publish) >= PUBLISH_EVERY || publish_now {
            let s = self.pipeline.stats();
            local.set_flow_state(FlowTableState {
                active: self.pipeline.active_flows() as u64,
                held_bytes: s.held_bytes_now as u64,
                flow_limit_refusals: s.flow_limit,
                evictions: s.flows_evicted,
                capacity: self.capacity(),
            });
            publish_dns(s, local);
            local.publish(&self.counters);
            marks.last_publish = now;
        }
        if now.duration_since(marks.last_anchor) >= REANCHOR_EVERY {
            self.pipeline.set_clock_anchor(now, epoch_ms());
            marks.last_anchor = now;
        }
    }

    /// Step 5, past the busy-polling window: sleeps until a packet, the stop signal, the next
    /// pipeline deadline or [`IDLE_TICK`]. True when woken to stop.
    fn sleep(&self, now: Instant) -> Result<bool, WorkerError> {
        let timeout = match self.pipeline.next_timeout() {
            Some(t) => t.saturating_duration_since(now).min(IDLE_TICK),
            None => IDLE_TICK,
        };
        let also = self.dns.as_ref().map(|d| &*d.inbox.wake);
        let waited = self
            .queue
            .wait(&self.wake, also, Some(timeout))
            .map(|(r, _)| r);
        match waited {
            Ok(r) => Ok(r.woken && self.stop.load(Ordering::Acquire)),
            Err(e) => Err(WorkerError::Tun {
                index: self.index,
                error: e,
            }),
        }
    }

    /// Ends every flow so their flow-end records reach the log; nothing more is written to the
    /// TUN. The flow gauges go to zero, the counters stay.
    fn finish(&mut self, out: &mut Output, local: &mut LocalCounters) {
        self.pipeline.shutdown(Instant::now(), out);
        out.transmit.clear();
        // Flows still in the kernel are released (the hand-off thread clears their mark before
        // it stops).
        self.fastpath_requests(out);
        for rec in out.records.drain(..) {
            count_record(&rec, local);
            self.log.submit(rec);
        }
        let s = self.pipeline.stats();
        local.set_flow_state(FlowTableState {
            flow_limit_refusals: s.flow_limit,
            evictions: s.flows_evicted,
            capacity: self.capacity(),
            ..FlowTableState::default()
        });
        local.publish(&self.counters);
    }

    fn capacity(&self) -> u64 {
        self.pipeline.config().flow_capacity as u64
    }

    /// One frame read from the TUN: virtio-net header, then the IP packet.
    fn packet(&mut self, frame: &[u8], out: &mut Output, local: &mut LocalCounters) {
        if frame.len() <= VNET_HDR_LEN {
            local.dropped(DropReason::Malformed, 0);
            return;
        }
        let mut vnet = [0u8; VNET_HDR_LEN];
        vnet.copy_from_slice(&frame[..VNET_HDR_LEN]);
        let meta = PacketMeta {
            vnet,
            has_vnet: true,
        };
        let packet = &frame[VNET_HDR_LEN..];
        let disposition = self.pipeline.process(Instant::now(), packet, meta, out);
        self.emit(out, local);
        match disposition {
            Disposition::Forward => match self.queue.write(frame) {
                Ok(_) => local.forwarded(packet.len()),
                Err(e) => {
                    local.tun_write_error();
                    tracing::debug!(worker = self.index, error = %e, "TUN write failed");
                }
            },
            Disposition::Held => local.held(),
            Disposition::Drop(reason) => local.dropped(reason, packet.len()),
        }
    }

    /// Hands the resolver's answers to the pipeline (the flows waiting for them are decided).
    fn dns_answers(&mut self, now: Instant, out: &mut Output, local: &mut LocalCounters) {
        let Some(dns) = &self.dns else {
            return;
        };
        if !dns.inbox.take_pending() {
            return;
        }
        let mut answers = Vec::new();
        while let Some(a) = dns.inbox.try_recv() {
            answers.push(a);
        }
        for (name, answer) in answers {
            self.pipeline.dns_answer(now, &name, answer, out);
            self.emit(out, local);
        }
    }

    /// Writes what the pipeline transmits and queues its records, and sends the names it
    /// wants looked up to the resolver thread (a refusal is answered at once: the flows
    /// waiting for the name fail closed rather than wait for nothing).
    fn emit(&mut self, out: &mut Output, local: &mut LocalCounters) {
        while !out.dns_queries.is_empty() {
            let names = std::mem::take(&mut out.dns_queries);
            for name in names {
                let sent = self
                    .dns
                    .as_ref()
                    .is_some_and(|d| d.client.submit(&name, self.index));
                if !sent {
                    let failure = DnsAnswer::Failed(DnsFailure::Refused);
                    self.pipeline
                        .dns_answer(Instant::now(), &name, failure, out);
                }
            }
        }
        for t in out.transmit.drain(..) {
            // Released packets keep the header they were read with; packets the gateway built
            // get a zeroed one: no segmentation, checksum complete.
            let hdr = if t.meta.has_vnet {
                t.meta.vnet
            } else {
                [0u8; VNET_HDR_LEN]
            };
            match self.queue.write_parts(&hdr, &t.packet) {
                Ok(_) => local.transmitted(t.packet.len()),
                Err(e) => {
                    local.tun_write_error();
                    tracing::debug!(worker = self.index, error = %e, "TUN write failed");
                }
            }
        }
        for rec in out.records.drain(..) {
            count_record(&rec, local);
            self.log.submit(rec);
        }
        if !out.fastpath.is_empty() {
            self.fastpath_requests(out);
        }
    }

    /// Queues the pipeline's fast-path requests without waiting; a hand-off the queue cannot
    /// take is refused at once (the flow stays on the TUN).
    fn fastpath_requests(&mut self, out: &mut Output) {
        let mut requests = std::mem::take(&mut out.fastpath);
        for req in requests.drain(..) {
            let queued = match &mut self.fastpath {
                Some(link) => link.submit(req),
                None => false,
            };
            if let (false, FastPathRequest::HandOff { tuple, cookie }) = (queued, req) {
                self.pipeline.fastpath_event(
                    Instant::now(),
                    tuple,
                    cookie,
                    FastPathEvent::Refused,
                    out,
                );
            }
        }
        // Keep the allocation for the next packets.
        out.fastpath = requests;
    }
}

/// What one batch of reads ended with.
struct Batch {
    /// The queue ran dry (or a read failed): nothing more to read now.
    drained: bool,
    /// At least one frame was read.
    saw_packet: bool,
    /// The read error that ended the batch.
    failure: Option<io::Error>,
}

/// When the loop last did each of its periodic things.
struct Marks {
    seen_generation: u64,
    last_anchor: Instant,
    last_publish: Instant,
    last_packet: Instant,
}

/// The pipeline's DNS check counters, for `bulkhead_dns_check_events_total`.
fn publish_dns(s: &crate::pipeline::PipelineStats, local: &mut LocalCounters) {
    let events = [
        (DnsEvent::CacheHit, s.dns_cache_hits),
        (DnsEvent::CacheMiss, s.dns_cache_misses),
        (DnsEvent::LookupAsked, s.dns_queries),
        (DnsEvent::LookupRefused, s.dns_queries_refused),
        (DnsEvent::Mismatch, s.dns_mismatches),
        (DnsEvent::Failure, s.dns_failures),
        (DnsEvent::Learned, s.dns_learned),
    ];
    for (e, v) in events {
        local.set_dns_event(e, v);
    }
}

/// Counts a decision record (flow-end records are not decisions).
fn count_record(rec: &DecisionRecord, local: &mut LocalCounters) {
    if rec.activity_id != ACTIVITY_CLOSE {
        local.decision(rec.action, rec.disposition, rec.reason);
    }
}

/// OCSF activity of a flow-end record.
const ACTIVITY_CLOSE: u8 = 2;

/// Errors after which the queue is unusable.
fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF) | Some(libc::EBADFD) | Some(libc::ENODEV)
    )
}
