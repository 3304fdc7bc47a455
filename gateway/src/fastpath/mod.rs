//! The kernel fast path, runtime side: decided flows leave the TUN.
//!
//! ```text
//!  workers ──(bounded queue: hand off / take back / release)──> hand-off thread ──ctnetlink──> kernel
//!     ^                                                              |  ^
//!     └──(bounded inbox per worker: offloaded / refused / counts /   |  └── closed (event thread:
//!         ended / taken back)────────────────────────────────────────┘      update + destroy events)
//! ```
//!
//! How a flow leaves the TUN: `manage_routing` installs (see [`crate::routing`]) an nftables
//! table `inet bulkhead_TUN` whose prerouting chain (mangle priority: after conntrack, before
//! routing) copies the fast-path bit of a packet's conntrack mark to the packet mark, and, ahead
//! of each diversion rule, `ip rule iif IFACE fwmark BIT/BIT lookup main`: a marked packet is
//! routed by the main table and never reaches the TUN. The local table still comes first, so
//! traffic to the gateway itself is never touched. Both directions share the conntrack entry, so
//! one mark moves the whole connection.
//!
//! The pipeline asks for a hand-off once a flow is settled (see `pipeline/fastpath.rs`); the
//! worker queues the request without waiting (a full queue leaves the flow on the TUN and is
//! counted), and this module's hand-off thread sets the mark with one ctnetlink update
//! (`IPCTNL_MSG_CT_NEW` with `CTA_MARK` and `CTA_MARK_MASK`, the entry named by its original
//! tuple), then reads the entry once to check it has counters (an entry created before
//! `nf_conntrack_acct` was set has none, and its flow-end record could not be complete: such a
//! flow stays on the TUN). Conntrack counts a packet each time it enters the IP stack, twice for
//! a packet that crossed the TUN; the pipeline turns the entry's counters and its own into the
//! flow's traffic (`pipeline/fastpath.rs`, `FastPathEvent`).
//!
//! The flow's end comes from conntrack events: an update to `TIME_WAIT` or `CLOSE` (FINs both
//! ways, or a RST), read with a last query of the counters, or the entry's destruction (expiry),
//! whose event carries them. Every [`REPORT_EVERY`] a dump of the marked entries (filtered by the
//! kernel on the mark) reports the traffic of each flow (the pipeline keeps its idle deadline
//! and counters current with it) and ends flows whose entry vanished without an event (events
//! lost under load: `ENOBUFS`, counted).
//!
//! Take-back (a policy swap denies a handed-off flow): the bit is cleared, so the flow's next
//! packet is routed into the TUN again, where the pipeline answers it with RSTs both ways; the
//! counters read then complete the flow-end record. Release (the pipeline forgot the flow: idle
//! past its timeout, shutdown) clears the bit the same way.
//!
//! Netlink is spoken directly ([`nl`] builds and reads the messages, [`crate::sys::netlink`] is
//! the socket): the dozen messages needed did not justify a dependency, and the `nft` and
//! `conntrack` programs are not needed at run time.

pub mod nl;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::Label;
use crate::pipeline::{FastPathEvent, FastPathRequest, FlowTuple};
use crate::record::{EndReason, Traffic};
use crate::sys::netlink::NetlinkSocket;

use self::nl::{Builder, Counters, CtEntry, CtMessage};

/// Requests queued from all workers to the hand-off thread.
pub const QUEUE: usize = 8192;
/// Reports queued from the hand-off thread to one worker.
pub const INBOX: usize = 8192;
/// Interval of the counters dump.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);
/// Bound on waiting for the kernel's answer to one request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Receive buffer of the event socket: bursts of connection ends must not overflow it.
const EVENT_BUFFER: usize = 8 << 20;
const RECV_BUF: usize = 64 * 1024;

/// The default fast-path bit of the conntrack and packet marks.
pub const DEFAULT_MARK: u32 = 0x0100_0000;

/// The nftables table of a gateway whose TUN device is `tun`.
pub fn table_name(tun: &str) -> String {
    format!("bulkhead_{tun}")
}

/// Why a hand-off did not happen (`reason` label of `bulkhead_fastpath_handoff_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOffFailure {
    /// The queue to the hand-off thread was full.
    QueueFull,
    /// Conntrack has no entry for the flow.
    NoEntry,
    /// The entry has no counters (it predates `nf_conntrack_acct`): the flow-end record could
    /// not be complete, so the flow stays on the TUN.
    NoAccounting,
    /// Netlink answered with another error, or not in time.
    Netlink,
}

impl Label for HandOffFailure {
    const VALUES: &'static [&'static str] = &["queue_full", "no_entry", "no_accounting", "netlink"];
    fn index(self) -> usize {
        match self {
            HandOffFailure::QueueFull => 0,
            HandOffFailure::NoEntry => 1,
            HandOffFailure::NoAccounting => 2,
            HandOffFailure::Netlink => 3,
        }
    }
}

/// The fast path's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct FastPathStats {
    /// The kernel has what the fast path needs and it is on.
    pub supported: AtomicBool,
    pub handed_off: AtomicU64,
    pub taken_back: AtomicU64,
    pub released: AtomicU64,
    /// Handed-off flows whose end the kernel reported.
    pub ended: AtomicU64,
    /// Flows the kernel forwards now.
    pub active: AtomicU64,
    /// By [`HandOffFailure`] index.
    pub failures: [AtomicU64; 4],
    /// Conntrack events lost (socket overflow) and reports dropped on a full worker inbox.
    pub events_lost: AtomicU64,
    /// Time the hand-off thread spent on successful hand-offs (the netlink round trips), in
    /// nanoseconds: with `handed_off`, the mean cost of one.
    pub handoff_ns: AtomicU64,
}

impl FastPathStats {
    pub fn failed(&self, why: HandOffFailure) {
        self.failures[why.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Checks at start that the kernel can do it: conntrack accounting, the nftables and ctnetlink
/// netlink interfaces (a throw-away table is created and deleted), conntrack events. `Err` says
/// what is missing.
pub fn probe(mark: u32) -> Result<(), String> {
    if !std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_acct").exists() {
        return Err(
            "conntrack accounting is not available (no net.netfilter.nf_conntrack_acct; \
                    is nf_conntrack loaded?)"
                .into(),
        );
    }
    let probe_table = format!("bulkhead_probe_{}", std::process::id());
    install_table(&probe_table, mark).map_err(|e| format!("nftables over netlink: {e}"))?;
    delete_table(&probe_table).map_err(|e| format!("nftables over netlink: {e}"))?;
    let events =
        NetlinkSocket::open(nl::NETLINK_NETFILTER).map_err(|e| format!("ctnetlink socket: {e}"))?;
    for group in [nl::NFNLGRP_CONNTRACK_UPDATE, nl::NFNLGRP_CONNTRACK_DESTROY] {
        events
            .join_group(group)
            .map_err(|e| format!("conntrack events: {e}"))?;
    }
    Ok(())
}

/// Clears the fast-path bit of every conntrack entry that carries it. A gateway that did not
/// stop cleanly (killed, crashed) leaves marked entries behind; once the table is installed again
/// their packets would go around the TUN without this gateway knowing the flows. Cleared, they
/// come to the TUN and are treated as packets of unknown flows. Returns how many were cleared.
pub fn clear_marks(mark: u32) -> io::Result<usize> {
    let sock = command_socket()?;
    let mut rbuf = vec![0u8; RECV_BUF];
    let mut b = Builder::new();
    b.ct_dump_marked(1, mark);
    let entries = match request_on(&sock, &mut rbuf, 1, &b.finish()) {
        Answer::Done(e) => e,
        Answer::Failed(e) => return Err(io::Error::from_raw_os_error(e)),
    };
    let mut cleared = 0;
    for (i, tuple) in entries.iter().filter_map(|e| e.tuple).enumerate() {
        let seq = 2 + i as u32;
        let mut b = Builder::new();
        b.ct_set_mark(seq, &tuple, mark, false);
        match request_on(&sock, &mut rbuf, seq, &b.finish()) {
            Answer::Done(_) => cleared += 1,
            // Gone meanwhile: nothing to clear.
            Answer::Failed(e) if e == libc::ENOENT => {}
            Answer::Failed(e) => return Err(io::Error::from_raw_os_error(e)),
        }
    }
    Ok(cleared)
}

/// The sockets that own the fast path's tables (see [`install_table`]), by table name.
static OWNERS: Mutex<Vec<(String, NetlinkSocket)>> = Mutex::new(Vec::new());

/// Creates the fast path's nftables table (see the module docs); an existing one of that name is
/// replaced. The table belongs to a netlink socket the process keeps open
/// (`NFT_TABLE_F_OWNER`): if the gateway dies, the kernel removes the table at once, so the
/// flows it handed off stop going around the TUN (they come to it, and are dropped with the rest
/// of the diverted traffic, until the next start). Kernels before 5.12 do not know the flag: the
/// table is then an ordinary one, which the next start removes.
pub fn install_table(name: &str, mark: u32) -> io::Result<()> {
    let sock = command_socket()?;
    let _ = delete_on(&sock, name);
    let mut b = Builder::new();
    let acks = b.nft_install(1, name, mark, true);
    match transact(&sock, &b.finish(), &acks) {
        Ok(()) => {
            lock_owners().push((name.to_owned(), sock));
            Ok(())
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
            tracing::warn!(
                table = name,
                "nftables does not know owned tables (Linux 5.12+): if the gateway dies, its \
                 handed-off flows keep bypassing the TUN until the next start"
            );
            let mut b = Builder::new();
            let acks = b.nft_install(1, name, mark, false);
            transact(&sock, &b.finish(), &acks)
        }
        Err(e) => Err(e),
    }
}

/// Deletes the fast path's nftables table; a missing one is not an error.
pub fn delete_table(name: &str) -> io::Result<()> {
    let owner = {
        let mut owners = lock_owners();
        owners
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| owners.swap_remove(i).1)
    };
    // Only the owner may change an owned table; closing it afterwards would remove it anyway.
    let sock = match owner {
        Some(s) => s,
        None => command_socket()?,
    };
    delete_on(&sock, name)
}

fn lock_owners() -> std::sync::MutexGuard<'static, Vec<(String, NetlinkSocket)>> {
    OWNERS.lock().unwrap_or_else(|p| p.into_inner())
}

fn delete_on(sock: &NetlinkSocket, name: &str) -> io::Result<()> {
    let mut b = Builder::new();
    let acks = b.nft_delete(100, name);
    match transact(sock, &b.finish(), &acks) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

fn command_socket() -> io::Result<NetlinkSocket> {
    let sock = NetlinkSocket::open(nl::NETLINK_NETFILTER)?;
    sock.set_recv_timeout(ANSWER_TIMEOUT)?;
    Ok(sock)
}

/// Sends `buf` and waits for the acknowledgments of `acks`; the first error answers.
fn transact(sock: &NetlinkSocket, buf: &[u8], acks: &[u32]) -> io::Result<()> {
    sock.send(buf)?;
    let mut waiting: HashSet<u32> = acks.iter().copied().collect();
    let mut rbuf = vec![0u8; RECV_BUF];
    while !waiting.is_empty() {
        let n = sock.recv(&mut rbuf)?;
        for m in nl::messages(&rbuf[..n]) {
            if let Some(err) = m.error() {
                if err != 0 {
                    return Err(io::Error::from_raw_os_error(-err));
                }
                waiting.remove(&m.seq);
            }
        }
    }
    Ok(())
}

/// What the hand-off thread is asked.
#[derive(Debug)]
enum Command {
    Request {
        worker: usize,
        req: FastPathRequest,
    },
    /// A marked entry ended (from the event thread): `destroyed` when it is gone (its counters
    /// are in the event), else it moved to `TIME_WAIT` / `CLOSE`.
    Closed {
        entry: CtEntry,
        destroyed: bool,
    },
    /// Events were lost: look at every handed-off flow now.
    Resync,
}

/// A report to a worker's pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub tuple: FlowTuple,
    pub cookie: u32,
    pub event: FastPathEvent,
}

/// A worker's end of the fast path.
#[derive(Debug)]
pub struct WorkerLink {
    index: usize,
    tx: SyncSender<Command>,
    inbox: Receiver<Report>,
    /// Take-backs and releases the full queue refused: retried, never dropped (a flow left
    /// marked would go on in the kernel). Bounded by the worker's flow table: one per flow.
    retry: VecDeque<FastPathRequest>,
    stats: Arc<FastPathStats>,
}

impl WorkerLink {
    /// Queues one request of the pipeline without blocking. `false`: a hand-off the full queue
    /// refused (the caller tells the pipeline: the flow stays on the TUN).
    pub fn submit(&mut self, req: FastPathRequest) -> bool {
        if !self.retry.is_empty() && !matches!(req, FastPathRequest::HandOff { .. }) {
            // Keep the order of take-backs and releases.
            self.retry.push_back(req);
            return true;
        }
        match self.tx.try_send(Command::Request {
            worker: self.index,
            req,
        }) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => match req {
                FastPathRequest::HandOff { .. } => {
                    self.stats.failed(HandOffFailure::QueueFull);
                    false
                }
                _ => {
                    self.retry.push_back(req);
                    true
                }
            },
        }
    }

    /// Queues what was refused earlier, in order, as far as the queue takes it.
    pub fn retry(&mut self) {
        while let Some(req) = self.retry.pop_front() {
            let cmd = Command::Request {
                worker: self.index,
                req,
            };
            match self.tx.try_send(cmd) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.retry.push_front(req);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.retry.clear();
                    return;
                }
            }
        }
    }

    /// The next report for this worker, if any.
    pub fn next_report(&mut self) -> Option<Report> {
        self.inbox.try_recv().ok()
    }
}

/// The running fast path: the hand-off thread and the event thread.
#[derive(Debug)]
pub struct FastPath {
    stop: Arc<AtomicBool>,
    tx: Option<SyncSender<Command>>,
    handoff: Option<JoinHandle<()>>,
    events: Option<JoinHandle<()>>,
}

impl FastPath {
    /// Opens the netlink sockets and starts the threads; one [`WorkerLink`] per worker.
    pub fn start(
        mark: u32,
        workers: usize,
        stats: Arc<FastPathStats>,
    ) -> io::Result<(FastPath, Vec<WorkerLink>)> {
        let events = NetlinkSocket::open(nl::NETLINK_NETFILTER)?;
        for group in [nl::NFNLGRP_CONNTRACK_UPDATE, nl::NFNLGRP_CONNTRACK_DESTROY] {
            events.join_group(group)?;
        }
        if let Err(e) = events.set_recv_buffer(EVENT_BUFFER) {
            tracing::debug!(error = %e, "fast path: event socket buffer left at its default");
        }
        events.set_recv_timeout(Duration::from_millis(200))?;
        let commands = command_socket()?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let mut inboxes = Vec::with_capacity(workers);
        let mut links = Vec::with_capacity(workers);
        for index in 0..workers {
            let (itx, irx) = mpsc::sync_channel(INBOX);
            inboxes.push(itx);
            links.push(WorkerLink {
                index,
                tx: tx.clone(),
                inbox: irx,
                retry: VecDeque::new(),
                stats: stats.clone(),
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let handoff = HandOff {
            sock: commands,
            seq: 1000,
            mark,
            flows: HashMap::new(),
            inboxes,
            stats: stats.clone(),
            buf: vec![0u8; RECV_BUF],
        };
        let handoff = std::thread::Builder::new()
            .name("bulkhead-handoff".into())
            .spawn(move || handoff.run(rx))?;
        let (etx, estop, estats) = (tx.clone(), stop.clone(), stats);
        let spawned = std::thread::Builder::new()
            .name("bulkhead-ctevents".into())
            .spawn(move || watch_events(events, mark, etx, estop, estats));
        let events = match spawned {
            Ok(h) => h,
            Err(e) => {
                // The hand-off thread ends once every sender is gone.
                drop(links);
                drop(tx);
                let _ = handoff.join();
                return Err(e);
            }
        };
        Ok((
            FastPath {
                stop,
                tx: Some(tx),
                handoff: Some(handoff),
                events: Some(events),
            },
            links,
        ))
    }

    /// Stops the threads once the workers (and their links) are gone: the hand-off thread first
    /// works through what is queued (the releases of the workers' last flows).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        self.tx = None;
        if let Some(t) = self.events.take() {
            let _ = t.join();
        }
        if let Some(t) = self.handoff.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FastPath {
    /// Without [`FastPath::stop`] (a failed start-up): the threads are told to stop and left to
    /// end on their own; the hand-off thread ends when the last worker link is gone, so it is
    /// not waited for here.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.tx = None;
    }
}

/// One handed-off flow, as the hand-off thread knows it.
#[derive(Debug)]
struct Entry {
    worker: usize,
    cookie: u32,
    /// The conntrack entry's id: a later entry on the same tuple is another connection.
    id: Option<u32>,
    /// Counters as last read.
    last: Counters,
}

/// The hand-off thread's state.
struct HandOff {
    sock: NetlinkSocket,
    seq: u32,
    mark: u32,
    flows: HashMap<FlowTuple, Entry>,
    inboxes: Vec<SyncSender<Report>>,
    stats: Arc<FastPathStats>,
    buf: Vec<u8>,
}

/// What one request to conntrack answered.
enum Answer {
    Done(Vec<CtEntry>),
    Failed(i32),
}

impl HandOff {
    fn run(mut self, rx: Receiver<Command>) {
        let mut next_report = Instant::now() + REPORT_EVERY;
        loop {
            let now = Instant::now();
            match rx.recv_timeout(next_report.saturating_duration_since(now)) {
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_report {
                self.report_counts();
                next_report = Instant::now() + REPORT_EVERY;
            }
        }
        // Nothing may stay marked once the gateway stops tracking it.
        let tuples: Vec<FlowTuple> = self.flows.keys().copied().collect();
        for t in tuples {
            let _ = self.set_mark(&t, false);
        }
        self.stats.active.store(0, Ordering::Relaxed);
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Request { worker, req } => match req {
                FastPathRequest::HandOff { tuple, cookie } => self.hand_off(worker, tuple, cookie),
                FastPathRequest::TakeBack { tuple, cookie } => {
                    let traffic = self.unmark(&tuple, cookie);
                    self.stats.taken_back.fetch_add(1, Ordering::Relaxed);
                    self.report(worker, tuple, cookie, FastPathEvent::TakenBack(traffic));
                }
                FastPathRequest::Release { tuple, cookie } => {
                    let _ = self.unmark(&tuple, cookie);
                    self.stats.released.fetch_add(1, Ordering::Relaxed);
                }
            },
            Command::Closed { entry, destroyed } => self.closed(entry, destroyed),
            Command::Resync => self.report_counts(),
        }
        self.stats
            .active
            .store(self.flows.len() as u64, Ordering::Relaxed);
    }

    fn hand_off(&mut self, worker: usize, tuple: FlowTuple, cookie: u32) {
        let started = Instant::now();
        let refused = |s: &mut HandOff, why: HandOffFailure| {
            s.stats.failed(why);
            s.report(worker, tuple, cookie, FastPathEvent::Refused);
        };
        match self.set_mark(&tuple, true) {
            Answer::Done(_) => {}
            Answer::Failed(e) if e == libc::ENOENT => {
                return refused(self, HandOffFailure::NoEntry)
            }
            Answer::Failed(_) => return refused(self, HandOffFailure::Netlink),
        }
        let entry = match self.get(&tuple) {
            Answer::Done(entries) => entries.into_iter().find(|e| e.tuple == Some(tuple)),
            Answer::Failed(_) => None,
        };
        match entry {
            Some(CtEntry {
                counters: Some(c),
                id,
                ..
            }) => {
                self.flows.insert(
                    tuple,
                    Entry {
                        worker,
                        cookie,
                        id,
                        last: c,
                    },
                );
                self.stats.handed_off.fetch_add(1, Ordering::Relaxed);
                self.stats.handoff_ns.fetch_add(
                    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                self.report(worker, tuple, cookie, FastPathEvent::Offloaded);
            }
            Some(_) => {
                let _ = self.set_mark(&tuple, false);
                refused(self, HandOffFailure::NoAccounting);
            }
            None => {
                let _ = self.set_mark(&tuple, false);
                refused(self, HandOffFailure::Netlink);
            }
        }
    }

    /// Clears the bit; the entry's counters (zero when unknown).
    fn unmark(&mut self, tuple: &FlowTuple, cookie: u32) -> Traffic {
        let _ = self.set_mark(tuple, false);
        let Some(entry) = self.flows.remove(tuple) else {
            return Traffic::default();
        };
        if entry.cookie != cookie {
            // Another hand-off of the same ports is what is tracked: keep it.
            self.flows.insert(*tuple, entry);
            return Traffic::default();
        }
        let now = match self.get(tuple) {
            Answer::Done(entries) => entries
                .into_iter()
                .find(|e| e.tuple == Some(*tuple) && same_id(e.id, entry.id))
                .and_then(|e| e.counters),
            Answer::Failed(_) => None,
        };
        now.map_or_else(Traffic::default, |c| traffic(&c))
    }

    fn closed(&mut self, ct: CtEntry, destroyed: bool) {
        let Some(tuple) = ct.tuple else {
            return;
        };
        let Some(entry) = self.flows.get(&tuple) else {
            return;
        };
        if !same_id(ct.id, entry.id) {
            return;
        }
        let counters = if destroyed {
            ct.counters
        } else {
            match self.get(&tuple) {
                Answer::Done(entries) => entries
                    .into_iter()
                    .find(|e| e.tuple == Some(tuple))
                    .and_then(|e| e.counters),
                Answer::Failed(_) => None,
            }
        };
        let Some(entry) = self.flows.remove(&tuple) else {
            return;
        };
        let traffic = counters.map_or_else(Traffic::default, |c| traffic(&c));
        let why = match ct.tcp_state {
            Some(nl::TCP_CONNTRACK_TIME_WAIT) => EndReason::Fin,
            Some(nl::TCP_CONNTRACK_CLOSE) => EndReason::Rst,
            _ => EndReason::IdleTimeout,
        };
        self.stats.ended.fetch_add(1, Ordering::Relaxed);
        self.report(
            entry.worker,
            tuple,
            entry.cookie,
            FastPathEvent::Ended { traffic, why },
        );
    }

    /// The periodic dump: traffic of every handed-off flow; flows whose entry is gone end.
    fn report_counts(&mut self) {
        if self.flows.is_empty() {
            return;
        }
        self.seq = self.seq.wrapping_add(1);
        let mut b = Builder::new();
        b.ct_dump_marked(self.seq, self.mark);
        let entries = match self.request(&b.finish()) {
            Answer::Done(e) => e,
            Answer::Failed(e) => {
                tracing::debug!(errno = e, "fast path: conntrack dump failed");
                return;
            }
        };
        let mut seen = HashSet::with_capacity(entries.len());
        let mut reports = Vec::new();
        for e in entries {
            let (Some(tuple), Some(c)) = (e.tuple, e.counters) else {
                continue;
            };
            let Some(entry) = self.flows.get_mut(&tuple) else {
                continue;
            };
            if !same_id(e.id, entry.id) {
                continue;
            }
            seen.insert(tuple);
            if c != entry.last {
                entry.last = c;
                reports.push((
                    entry.worker,
                    tuple,
                    entry.cookie,
                    FastPathEvent::Counts(traffic(&c)),
                ));
            }
        }
        let gone: Vec<FlowTuple> = self
            .flows
            .keys()
            .filter(|t| !seen.contains(*t))
            .copied()
            .collect();
        for t in gone {
            if let Some(entry) = self.flows.remove(&t) {
                self.stats.ended.fetch_add(1, Ordering::Relaxed);
                reports.push((
                    entry.worker,
                    t,
                    entry.cookie,
                    FastPathEvent::Ended {
                        traffic: traffic(&entry.last),
                        why: EndReason::IdleTimeout,
                    },
                ));
            }
        }
        for (w, t, c, ev) in reports {
            self.report(w, t, c, ev);
        }
    }

    fn report(&self, worker: usize, tuple: FlowTuple, cookie: u32, event: FastPathEvent) {
        let Some(inbox) = self.inboxes.get(worker) else {
            return;
        };
        if inbox
            .try_send(Report {
                tuple,
                cookie,
                event,
            })
            .is_err()
        {
            self.stats.events_lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn set_mark(&mut self, tuple: &FlowTuple, on: bool) -> Answer {
        self.seq = self.seq.wrapping_add(1);
        let mut b = Builder::new();
        b.ct_set_mark(self.seq, tuple, self.mark, on);
        self.request(&b.finish())
    }

    fn get(&mut self, tuple: &FlowTuple) -> Answer {
        self.seq = self.seq.wrapping_add(1);
        let mut b = Builder::new();
        b.ct_get(self.seq, tuple);
        self.request(&b.finish())
    }

    fn request(&mut self, msg: &[u8]) -> Answer {
        request_on(&self.sock, &mut self.buf, self.seq, msg)
    }
}

/// Sends one request (sequence number `seq`) and reads its answer: the entries it carries, up to
/// the acknowledgment (or, for a dump, `NLMSG_DONE`). Answers to earlier requests that timed out
/// are skipped by their sequence number.
fn request_on(sock: &NetlinkSocket, buf: &mut [u8], seq: u32, msg: &[u8]) -> Answer {
    if let Err(e) = sock.send(msg) {
        return Answer::Failed(e.raw_os_error().unwrap_or(libc::EIO));
    }
    let mut entries = Vec::new();
    loop {
        let n = match sock.recv(buf) {
            Ok(n) => n,
            Err(e) => return Answer::Failed(e.raw_os_error().unwrap_or(libc::EIO)),
        };
        for m in nl::messages(&buf[..n]) {
            if m.seq != seq {
                continue;
            }
            if let Some(err) = m.error() {
                return if err == 0 {
                    Answer::Done(entries)
                } else {
                    Answer::Failed(-err)
                };
            }
            if m.kind == nl::NLMSG_DONE {
                return Answer::Done(entries);
            }
            if let Some(CtMessage::Entry(e)) = m.conntrack() {
                entries.push(e);
            }
        }
    }
}

fn same_id(a: Option<u32>, b: Option<u32>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// An entry's counters as a flow's traffic: the original direction is the client's.
fn traffic(c: &Counters) -> Traffic {
    Traffic {
        bytes_out: c.orig_bytes,
        packets_out: c.orig_packets,
        bytes_in: c.reply_bytes,
        packets_in: c.reply_packets,
    }
}

/// The event thread: conntrack update and destroy events of marked entries become
/// [`Command::Closed`] for the hand-off thread.
fn watch_events(
    sock: NetlinkSocket,
    mark: u32,
    tx: SyncSender<Command>,
    stop: Arc<AtomicBool>,
    stats: Arc<FastPathStats>,
) {
    let mut buf = vec![0u8; RECV_BUF];
    while !stop.load(Ordering::Acquire) {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                stats.events_lost.fetch_add(1, Ordering::Relaxed);
                let _ = tx.try_send(Command::Resync);
                continue;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!(error = %e, "fast path: reading conntrack events");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        for m in nl::messages(&buf[..n]) {
            let cmd = match m.conntrack() {
                Some(CtMessage::Destroyed(e)) if e.mark & mark != 0 => Command::Closed {
                    entry: e,
                    destroyed: true,
                },
                Some(CtMessage::Entry(e))
                    if e.mark & mark != 0
                        && matches!(
                            e.tcp_state,
                            Some(nl::TCP_CONNTRACK_TIME_WAIT | nl::TCP_CONNTRACK_CLOSE)
                        ) =>
                {
                    Command::Closed {
                        entry: e,
                        destroyed: false,
                    }
                }
                _ => continue,
            };
            if tx.send(cmd).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_direction_is_the_clients() {
        let c = Counters {
            orig_packets: 15,
            orig_bytes: 1300,
            reply_packets: 120,
            reply_bytes: 170_000,
        };
        assert_eq!(
            traffic(&c),
            Traffic {
                bytes_out: 1300,
                packets_out: 15,
                bytes_in: 170_000,
                packets_in: 120
            }
        );
    }

    #[test]
    fn failure_labels_are_bounded_and_distinct() {
        let all = [
            HandOffFailure::QueueFull,
            HandOffFailure::NoEntry,
            HandOffFailure::NoAccounting,
            HandOffFailure::Netlink,
        ];
        for (i, f) in all.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
        assert_eq!(HandOffFailure::VALUES.len(), all.len());
    }
}
