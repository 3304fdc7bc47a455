//! A multi-queue Linux TUN device with virtio-net headers and segmentation offloads.
//!
//! The device is opened with `IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_VNET_HDR`, one file
//! descriptor per queue (`TUNSETIFF` on each, the first creates the device). Every read and write
//! starts with a 12-byte `virtio_net_hdr_v1` ([`VNET_HDR_LEN`]; the 10-byte legacy header plus the
//! `num_buffers` field, which TUN leaves zero). 12 bytes keeps the IP packet after it 4-byte
//! aligned. The header is in native byte order (little-endian on every platform we build for).
//!
//! Offloads (`TUNSETOFFLOAD`): `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN`, plus
//! `TUN_F_USO4 | TUN_F_USO6` when the kernel knows them (Linux 6.2+; refused with `EINVAL` on older
//! kernels, then the device runs without them). With offloads on, one read can carry a TCP segment
//! of up to 64 KiB whose checksum is not yet computed (`VIRTIO_NET_HDR_F_NEEDS_CSUM`); writing
//! it back with the same header lets the kernel segment and checksum it on the way out. That is
//! what makes a user-space forwarder fast: one system call per 64 KiB instead of per 1500 bytes.
//!
//! The MTU is set and the link brought up with `SIOCSIFMTU` / `SIOCSIFFLAGS` on a datagram socket;
//! the device gets no address (the routes that use it name it with `dev`). IPv6 link-local
//! address generation is turned off on it first (`addr_gen_mode = 1`) so the kernel does not send
//! router solicitations of its own into the gateway, and `IFF_MULTICAST` is cleared so it sends no
//! MLD or IGMP reports either.
//!
//! Ownership: the first queue is opened with `IFF_TUN_EXCL`, so the kernel refuses (`EBUSY`)
//! to hand out a device that already exists. Without it, `TUNSETIFF` on an existing multi-queue
//! device silently attaches one more queue, and the kernel would spread flows over two gateways
//! with different policies. [`Tun::adopt`] takes over an existing (persistent) device instead,
//! but only when no process holds a queue of it.
//!
//! Queue file descriptors are non-blocking. [`TunQueue::wait`] polls one queue together with a
//! [`WakeFd`] so a worker thread sleeps until a packet, a wake-up or a deadline.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

/// Length of the virtio-net header in front of every packet read from or written to the TUN.
pub const VNET_HDR_LEN: usize = 12;
/// Largest read: a 64 KiB GSO packet plus its header (and some slack).
pub const MAX_READ: usize = 65_536 + VNET_HDR_LEN + 64;

/// `virtio_net_hdr.flags`: the L4 checksum is partial; `csum_start` / `csum_offset` say where.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.flags`: the checksum has been validated.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
/// `virtio_net_hdr.gso_type` values.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// A decoded virtio-net header (native byte order, as TUN uses on little-endian hosts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Decodes the first [`VNET_HDR_LEN`] bytes.
    pub fn decode(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_ne_bytes([b[2], b[3]]),
            gso_size: u16::from_ne_bytes([b[4], b[5]]),
            csum_start: u16::from_ne_bytes([b[6], b[7]]),
            csum_offset: u16::from_ne_bytes([b[8], b[9]]),
        }
    }

    /// Encodes to the 12-byte v1 layout (`num_buffers` zero).
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// The L4 checksum is not computed yet (checksum offload).
    pub fn needs_csum(&self) -> bool {
        self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
    }

    /// The packet is a segmentation-offload super-packet.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !VIRTIO_NET_HDR_GSO_ECN != VIRTIO_NET_HDR_GSO_NONE
    }
}

/// What the kernel accepted in `TUNSETOFFLOAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offloads {
    pub csum: bool,
    pub tso: bool,
    pub uso: bool,
}

/// How to create the device.
#[derive(Debug, Clone)]
pub struct TunOptions {
    pub name: String,
    pub queues: u16,
    pub mtu: u32,
    /// Ask for checksum and segmentation offloads (on in the daemon; off to measure without).
    pub offloads: bool,
}

/// The device: its queues and what it was set up with. Dropping the last queue removes it.
#[derive(Debug)]
pub struct Tun {
    name: String,
    queues: Vec<TunQueue>,
    offloads: Offloads,
    mtu: u32,
}

/// One queue of the device: a non-blocking file descriptor.
#[derive(Debug)]
pub struct TunQueue {
    fd: OwnedFd,
}

impl Tun {
    /// Creates the device with `opts.queues` queues, sets its MTU and brings it up. Fails with
    /// [`io::ErrorKind::AlreadyExists`] when a device of that name exists.
    pub fn create(opts: &TunOptions) -> io::Result<Tun> {
        Tun::open(opts, true)
    }

    /// Like [`Tun::create`], but an existing TUN device of that name (a persistent one, made
    /// with `ip tuntap add mode tun multi_queue`) is taken over, provided no process holds a
    /// queue of it. Fails with [`io::ErrorKind::ResourceBusy`] when one does.
    pub fn adopt(opts: &TunOptions) -> io::Result<Tun> {
        if let Some(pid) = queue_holder(&opts.name)? {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!(
                    "TUN device {} is in use: process {pid} holds a queue of it; refusing to \
                     share it (the kernel would split flows between the two)",
                    opts.name
                ),
            ));
        }
        Tun::open(opts, false)
    }

    fn open(opts: &TunOptions, exclusive: bool) -> io::Result<Tun> {
        let ifname = ifname_bytes(&opts.name)?;
        let mut queues = Vec::with_capacity(usize::from(opts.queues.max(1)));
        for i in 0..opts.queues.max(1) {
            // Only the first open may create; the others attach to the device it made.
            let queue = TunQueue::open(&ifname, exclusive && i == 0).map_err(|e| {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    return io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "TUN device {} already exists (another gateway, or a persistent \
                             device); refusing to attach to it. Stop its owner or delete it \
                             (ip link delete {}), or set gateway.adopt_existing_tun = true to \
                             take over a persistent device nobody uses",
                            opts.name, opts.name
                        ),
                    );
                }
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot attach a queue to TUN {:?} (/dev/net/tun): {e}",
                        opts.name
                    ),
                )
            })?;
            queues.push(queue);
        }
        let first = &queues[0];
        first.set_vnet_hdr_len()?;
        let offloads = if opts.offloads {
            first.set_offloads()?
        } else {
            first.ioctl_uint(libc::TUNSETOFFLOAD, 0)?;
            Offloads {
                csum: false,
                tso: false,
                uso: false,
            }
        };
        // IPv6 may be disabled on the host: then there is no such file, and nothing to turn off.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/addr_gen_mode", opts.name),
            "1",
        );
        let ctl = ControlSocket::new()?;
        ctl.set_mtu(&ifname, opts.mtu)
            .map_err(|e| annotate(e, &format!("setting MTU {} on {}", opts.mtu, opts.name)))?;
        ctl.set_up(&ifname)
            .map_err(|e| annotate(e, &format!("bringing up {}", opts.name)))?;
        Ok(Tun {
            name: opts.name.clone(),
            queues,
            offloads,
            mtu: opts.mtu,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Hands the queues out (one per worker); the device lives as long as any of them.
    pub fn into_queues(self) -> Vec<TunQueue> {
        self.queues
    }
}

/// What [`TunQueue::wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub woken: bool,
}

impl TunQueue {
    /// Opens one queue; `exclusive` makes the kernel refuse a device that already exists.
    fn open(ifname: &[libc::c_char; libc::IFNAMSIZ], exclusive: bool) -> io::Result<TunQueue> {
        let path = CString::new("/dev/net/tun").expect("no NUL in a constant");
        // SAFETY: `path` is a valid NUL-terminated string; open has no other preconditions.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a file descriptor we just opened and own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        ifr.ifr_name = *ifname;
        let excl = if exclusive { libc::IFF_TUN_EXCL } else { 0 };
        ifr.ifr_ifru.ifru_flags =
            (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE | libc::IFF_VNET_HDR | excl)
                as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is and outlives
        // the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TunQueue { fd })
    }

    fn ioctl_uint(&self, request: libc::Ioctl, value: libc::c_uint) -> io::Result<()> {
        // SAFETY: the TUN requests used here take an integer argument by value.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), request, value as libc::c_ulong) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn set_vnet_hdr_len(&self) -> io::Result<()> {
        let len: libc::c_int = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer, which `len` is and
        // outlives the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) };
        if rc < 0 {
            return Err(annotate(io::Error::last_os_error(), "TUNSETVNETHDRSZ"));
        }
        Ok(())
    }

    fn set_offloads(&self) -> io::Result<Offloads> {
        let base = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
        let uso = libc::TUN_F_USO4 | libc::TUN_F_USO6;
        match self.ioctl_uint(libc::TUNSETOFFLOAD, base | uso) {
            Ok(()) => {
                return Ok(Offloads {
                    csum: true,
                    tso: true,
                    uso: true,
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(annotate(e, "TUNSETOFFLOAD")),
        }
        match self.ioctl_uint(libc::TUNSETOFFLOAD, base) {
            Ok(()) => Ok(Offloads {
                csum: true,
                tso: true,
                uso: false,
            }),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.ioctl_uint(libc::TUNSETOFFLOAD, libc::TUN_F_CSUM)
                    .map_err(|e| annotate(e, "TUNSETOFFLOAD"))?;
                Ok(Offloads {
                    csum: true,
                    tso: false,
                    uso: false,
                })
            }
            Err(e) => Err(annotate(e, "TUNSETOFFLOAD")),
        }
    }

    /// Reads one packet with its virtio-net header into `buf` (which should hold [`MAX_READ`]
    /// bytes). `WouldBlock` when the queue is empty.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes one packet that already starts with its virtio-net header.
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is valid for reads of `frame.len()` bytes for the duration of the call.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes a header and a packet as one frame, without copying them together.
    pub fn write_parts(&self, hdr: &[u8; VNET_HDR_LEN], packet: &[u8]) -> io::Result<usize> {
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: packet.as_ptr() as *mut libc::c_void,
                iov_len: packet.len(),
            },
        ];
        // SAFETY: both iovecs point at live buffers of the stated lengths that writev only
        // reads; `iov` outlives the call.
        let n =
            unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sleeps until the queue is readable, `wake` or `also` (a second wake-up, such as a
    /// worker's DNS answers) is signalled, or `timeout` passes (`None`: no deadline).
    /// Interrupted sleeps return with nothing ready. `woken` says whether `wake` was
    /// signalled; the `bool` whether `also` was.
    pub fn wait(
        &self,
        wake: &WakeFd,
        also: Option<&WakeFd>,
        timeout: Option<Duration>,
    ) -> io::Result<(Readiness, bool)> {
        let pollin = |fd: RawFd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // Without `also`, its slot is a negative fd, which poll ignores.
        let mut fds = [
            pollin(self.fd.as_raw_fd()),
            pollin(wake.fd.as_raw_fd()),
            pollin(also.map_or(-1, |w| w.fd.as_raw_fd())),
        ];
        let ms: libc::c_int = match timeout {
            None => -1,
            // Round up so a deadline 0.3 ms away does not spin.
            Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
        };
        // SAFETY: `fds` is an array of three initialised pollfd that outlives the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                let none = Readiness {
                    readable: false,
                    woken: false,
                };
                return Ok((none, false));
            }
            return Err(e);
        }
        let bad = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
        if fds[0].revents & bad != 0 && fds[0].revents & libc::POLLIN == 0 {
            return Err(io::Error::other("TUN queue reported an error or hang-up"));
        }
        let r = Readiness {
            readable: fds[0].revents & libc::POLLIN != 0,
            woken: fds[1].revents & libc::POLLIN != 0,
        };
        Ok((r, fds[2].revents & libc::POLLIN != 0))
    }
}

impl AsRawFd for TunQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An eventfd that, once signalled, stays readable: the stop signal for every worker at once.
#[derive(Debug)]
pub struct WakeFd {
    fd: OwnedFd,
}

impl WakeFd {
    pub fn new() -> io::Result<WakeFd> {
        // SAFETY: eventfd takes no pointers.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a file descriptor we just created and own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(WakeFd { fd })
    }

    /// Makes the fd readable (for good, unless [`WakeFd::clear`] reads it back).
    pub fn signal(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, which outlives the call.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl WakeFd {
    /// Makes the fd unreadable again, for a wake-up that is re-armed after each use (a
    /// worker's DNS answers).
    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into `v`, which outlives the call; the fd is
        // non-blocking, so an unsignalled fd returns EAGAIN at once.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// A datagram socket for the interface ioctls.
struct ControlSocket {
    fd: OwnedFd,
}

impl ControlSocket {
    fn new() -> io::Result<ControlSocket> {
        // SAFETY: socket takes no pointers.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a socket we just created and own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(ControlSocket { fd })
    }

    fn set_mtu(&self, ifname: &[libc::c_char; libc::IFNAMSIZ], mtu: u32) -> io::Result<()> {
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        ifr.ifr_name = *ifname;
        ifr.ifr_ifru.ifru_mtu = mtu.min(i32::MAX as u32) as libc::c_int;
        // SAFETY: SIOCSIFMTU reads one `struct ifreq`, which `ifr` is and outlives the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCSIFMTU, &mut ifr) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn set_up(&self, ifname: &[libc::c_char; libc::IFNAMSIZ]) -> io::Result<()> {
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        ifr.ifr_name = *ifname;
        // SAFETY: SIOCGIFFLAGS fills the flags of one `struct ifreq`, which `ifr` is.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just initialised the flags member of the union.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        // No IFF_MULTICAST: the kernel then sends no MLD / IGMP reports of its own into the
        // gateway; forwarding through the device never needs it.
        ifr.ifr_ifru.ifru_flags = (flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short)
            & !(libc::IFF_MULTICAST as libc::c_short);
        // SAFETY: SIOCSIFFLAGS reads one `struct ifreq`, which `ifr` is and outlives the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCSIFFLAGS, &mut ifr) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A process of this network namespace holding a queue of the TUN device `name`, if any.
///
/// The kernel shows the device a `/dev/net/tun` descriptor is attached to in its fdinfo
/// (`iff:\tNAME`). Names are per network namespace, so holders in other namespaces are skipped.
/// Processes that vanish or cannot be read while scanning are skipped too.
fn queue_holder(name: &str) -> io::Result<Option<u32>> {
    let own_ns = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino())?;
    let wanted = format!("iff:\t{name}");
    for proc_entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = proc_entry.path();
        if std::fs::metadata(dir.join("ns/net")).map(|m| m.ino()).ok() != Some(own_ns) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let is_tun =
                std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == "/dev/net/tun");
            if !is_tun {
                continue;
            }
            let info = dir.join("fdinfo").join(fd.file_name());
            if std::fs::read_to_string(info).is_ok_and(|t| t.lines().any(|l| l == wanted)) {
                return Ok(Some(pid));
            }
        }
    }
    Ok(None)
}

fn ifname_bytes(name: &str) -> io::Result<[libc::c_char; libc::IFNAMSIZ]> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.bytes().any(|b| b == 0 || b == b'/')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}"),
        ));
    }
    let mut out = [0 as libc::c_char; libc::IFNAMSIZ];
    for (o, b) in out.iter_mut().zip(name.bytes()) {
        *o = b as libc::c_char;
    }
    Ok(out)
}

fn annotate(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_header_round_trips() {
        let h = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let b = h.encode();
        assert_eq!(&b[10..], &[0, 0]);
        assert_eq!(VnetHdr::decode(&b), h);
        assert!(h.needs_csum() && h.is_gso());
        let plain = VnetHdr::decode(&[0; VNET_HDR_LEN]);
        assert!(!plain.needs_csum() && !plain.is_gso());
        let ecn_only = VnetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_ECN,
            ..Default::default()
        };
        assert!(!ecn_only.is_gso());
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(ifname_bytes("bulk0").is_ok());
        assert!(ifname_bytes("").is_err());
        assert!(ifname_bytes("sixteen-chars-xx").is_err());
        assert!(ifname_bytes("a/b").is_err());
    }

    #[test]
    fn wake_fd_wakes_a_waiting_queue_poll() {
        // Needs no TUN: polling an eventfd alone through the same code path.
        let w = WakeFd::new().unwrap();
        w.signal().unwrap();
        let mut fds = [libc::pollfd {
            fd: w.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one initialised pollfd that outlives the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
        assert_eq!(rc, 1);
    }
}
