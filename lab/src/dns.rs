//! A small authoritative DNS server for the internet namespace, so that the gateway's DNS check
//! of names (`sni_dns_check`) resolves against a real server over real UDP in the lab.
//!
//! It answers A and AAAA questions from a zone the test can change while it runs (to make an
//! answer expire and change), with the TTL given; names not in the zone get NXDOMAIN. It can be
//! told to stay silent (a resolver that is down) or to answer late (a slow resolver), and counts
//! the queries it received. Messages are parsed and built with `hickory-proto`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

use crate::{netns, LabError};

/// The port the lab's DNS server listens on (the internet namespace's port 53 is the UDP echo
/// server's).
pub const DNS_PORT: u16 = 5353;

/// What the server knows and how it behaves; shared with the test that runs it.
#[derive(Debug, Default)]
pub struct DnsState {
    zone: Mutex<HashMap<String, (Vec<IpAddr>, u32)>>,
    silent: AtomicBool,
    delay_ms: AtomicU64,
    queries: AtomicU64,
}

impl DnsState {
    /// Sets what `name` resolves to, with `ttl` seconds.
    pub fn set(&self, name: &str, addrs: &[IpAddr], ttl: u32) {
        self.zone
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_ascii_lowercase(), (addrs.to_vec(), ttl));
    }

    /// Stops answering (true) or answers again (false).
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::Relaxed);
    }

    /// Removes a name from the zone: its queries get NXDOMAIN.
    pub fn remove(&self, name: &str) {
        self.zone
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name.to_ascii_lowercase());
    }

    /// Answers each query this late.
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(
            d.as_millis().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// Queries received so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// The answer to one query, if it is one to answer.
    fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        let q = Message::from_vec(query).ok()?;
        if q.message_type() != MessageType::Query || q.op_code() != OpCode::Query {
            return None;
        }
        let question = q.queries().first()?.clone();
        let name = question.name().to_ascii();
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        let mut resp = Message::new();
        resp.set_id(q.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_authoritative(true)
            .set_recursion_desired(q.recursion_desired())
            .set_recursion_available(true)
            .add_query(question.clone());
        let zone = self.zone.lock().unwrap_or_else(|p| p.into_inner());
        match zone.get(&key) {
            None => {
                resp.set_response_code(ResponseCode::NXDomain);
            }
            Some((addrs, ttl)) => {
                resp.set_response_code(ResponseCode::NoError);
                for a in addrs {
                    let rdata = match (a, question.query_type()) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                        _ => continue,
                    };
                    resp.add_answer(Record::from_rdata(question.name().clone(), *ttl, rdata));
                }
            }
        }
        resp.to_vec().ok()
    }
}

/// The running server. Dropping it stops it.
#[derive(Debug)]
pub struct DnsServer {
    state: Arc<DnsState>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl DnsServer {
    /// Starts the server on `addr` in the named namespace; returns once it is bound.
    pub fn start(netns_name: &str, addr: SocketAddr) -> Result<DnsServer, LabError> {
        DnsServer::start_in(Some(netns_name), addr)
    }

    /// Starts the server on `addr` in this process's own namespace (a loopback address, for
    /// benches); returns once it is bound.
    pub fn start_here(addr: SocketAddr) -> Result<DnsServer, LabError> {
        DnsServer::start_in(None, addr)
    }

    fn start_in(netns_name: Option<&str>, addr: SocketAddr) -> Result<DnsServer, LabError> {
        let state = Arc::new(DnsState::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_state = state.clone();
        let body = move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let socket = match UdpSocket::bind(addr).await {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("bind udp {addr}: {e}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                tokio::select! {
                    _ = serve(socket, thread_state) => {}
                    _ = stop_rx => {}
                }
            });
        };
        let thread = match netns_name {
            Some(ns) => netns::spawn_in(ns, body),
            None => std::thread::Builder::new()
                .name("lab-dns".into())
                .spawn(move || {
                    body();
                    Ok(())
                }),
        }
        .map_err(|e| LabError::io("spawn the DNS server thread", e))?;
        let server = DnsServer {
            state,
            addr,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(server),
            Ok(Err(e)) => Err(LabError::Other(format!("DNS server: {e}"))),
            Err(_) => Err(LabError::Other("DNS server: did not start".into())),
        }
    }

    /// The zone and behaviour, to change while it runs.
    pub fn state(&self) -> &Arc<DnsState> {
        &self.state
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(socket: Arc<UdpSocket>, state: Arc<DnsState>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        state.queries.fetch_add(1, Ordering::Relaxed);
        if state.silent.load(Ordering::Relaxed) {
            continue;
        }
        let Some(reply) = state.answer(&buf[..n]) else {
            continue;
        };
        let delay = Duration::from_millis(state.delay_ms.load(Ordering::Relaxed));
        let socket = socket.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let _ = socket.send_to(&reply, peer).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::str::FromStr;

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(3)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .add_query(Query::query(Name::from_str(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    #[test]
    fn answers_from_the_zone_and_nxdomain_otherwise() {
        let s = DnsState::default();
        s.set(
            "API.openai.com",
            &[
                "10.200.0.10".parse().unwrap(),
                "fd00:200::10".parse().unwrap(),
            ],
            7,
        );
        let r = Message::from_vec(&s.answer(&query("api.openai.com.", RecordType::A)).unwrap())
            .unwrap();
        assert_eq!(r.id(), 3);
        assert_eq!(r.answers().len(), 1);
        assert_eq!(r.answers()[0].ttl(), 7);
        let r = Message::from_vec(
            &s.answer(&query("api.openai.com.", RecordType::AAAA))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(r.answers().len(), 1);
        let r =
            Message::from_vec(&s.answer(&query("nope.example.", RecordType::A)).unwrap()).unwrap();
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        assert!(s.answer(b"garbage").is_none());
    }
}
