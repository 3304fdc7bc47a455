//! Resets the gateway sends.

use crate::wire::{self, IpProtocol, RstTarget, TcpFlowSeq};

use crate::pipeline::state::Flow;
use crate::pipeline::{Output, PacketMeta, Shared, Transmit};

impl Shared {
    /// Builds one RST to `target` from the flow's sequence state.
    pub(in crate::pipeline) fn push_rst(
        &mut self,
        fs: &TcpFlowSeq,
        target: RstTarget,
        out: &mut Output,
    ) {
        let mut packet = Vec::with_capacity(60);
        if wire::build_tcp_rst(&mut packet, &fs.rst(target)).is_ok() {
            self.stats.generated += 1;
            out.transmit.push(Transmit {
                packet,
                meta: PacketMeta::default(),
            });
        }
    }

    /// Resets the flow's ends as the gateway knows their sequence numbers.
    pub(in crate::pipeline) fn reset(
        &mut self,
        flow: &Flow,
        client: bool,
        server: bool,
        out: &mut Output,
    ) {
        if flow.proto != IpProtocol::Tcp {
            // Nothing to reset: the flow's further packets are dropped.
            return;
        }
        // An endpoint accepts a RST at once only when its sequence number is exactly the next one
        // it expects (RFC 5961). That is the peer's highest sequence number the gateway forwarded,
        // unless segments are still in flight: then it is what the endpoint acknowledged last.
        // When the two differ, both are sent.
        let mut fs = flow.flow_seq(0);
        if fs.server_next_seq.is_none() && flow.tcp.synced {
            fs.client_next_seq = flow.tcp.base;
        }
        if server {
            self.push_rst(&fs, RstTarget::Server, out);
            if let Some(a) = flow.tcp.server_ack.filter(|a| *a != fs.client_next_seq) {
                self.push_rst(
                    &TcpFlowSeq {
                        client_next_seq: a,
                        ..fs
                    },
                    RstTarget::Server,
                    out,
                );
            }
        }
        if client {
            self.push_rst(&fs, RstTarget::Client, out);
            if let Some(a) = flow
                .tcp
                .client_ack
                .filter(|a| Some(*a) != fs.server_next_seq)
            {
                let alt = TcpFlowSeq {
                    server_next_seq: Some(a),
                    ..fs
                };
                self.push_rst(&alt, RstTarget::Client, out);
            }
        }
    }
}
