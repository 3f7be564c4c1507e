//! Latency and corruption without netem: packets the kernel hands to an NFQUEUE are held
//! there and let go after the delay. For a delay only each packet's id crosses into the
//! agent (copy mode "meta"), so holding costs 16 bytes per packet here; the packets
//! themselves wait in the kernel, bounded by the queue's length. Past that length the
//! kernel lets packets through untouched (fail-open) rather than dropping them. To
//! corrupt, the agent takes whole packets and hands a chosen share back with one bit
//! flipped past the IP header, as netem's corruption does, so the receiver's checksum
//! catches it.
//!
//! Speaks nfnetlink_queue directly (a page of code) rather than through libnetfilter_queue,
//! so the agent keeps its one static binary and can poll the socket with a timeout.
//!
//! If the agent dies, the kernel closes the socket and drops the instance: the rule's
//! `--queue-bypass` then lets every packet through at once, and the next start removes
//! the rule.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{self, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, sockopt,
};
use rand::Rng;

/// How many packets the kernel holds for one delay at most (then fail-open).
pub const QUEUE_MAX_LEN: u32 = 8192;
/// Queue numbers troop tries, first free one wins.
const QUEUE_NUMBERS: std::ops::Range<u16> = 29_000..29_064;

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
const NF_ACCEPT: u32 = 1;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;

/// What happens to each queued packet: held for `delay`, give or take up to `jitter`
/// (uniform), and corrupted with a chance of `corrupt_per_10000` in 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Treatment {
    pub delay: Duration,
    pub jitter: Duration,
    pub corrupt_per_10000: u32,
}

/// What the delayer has done so far, for `Status`.
#[derive(Debug, Default)]
pub struct Held {
    pub packets: AtomicU64,
    /// Sum of the time from receipt to release, in microseconds.
    pub held_us: AtomicU64,
    pub corrupted: AtomicU64,
}

impl Held {
    /// (packets released, their mean hold).
    pub fn summary(&self) -> (u64, Duration) {
        let packets = self.packets.load(Ordering::Relaxed);
        let held = self.held_us.load(Ordering::Relaxed);
        (
            packets,
            Duration::from_micros(held.checked_div(packets).unwrap_or(0)),
        )
    }
}

/// A bound queue and the thread that holds its packets; dropping it releases every held
/// packet at once and unbinds.
pub struct Delayer {
    pub queue: u16,
    pub held: Arc<Held>,
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Delayer {
    /// Binds the first free troop queue number and starts holding what arrives there.
    pub fn start(treatment: Treatment) -> io::Result<Self> {
        let (socket, queue) = bind_free_queue(treatment.corrupt_per_10000 > 0)?;
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Held::default());
        let thread = std::thread::Builder::new()
            .name(format!("delay-q{queue}"))
            .spawn({
                let (stop, wake, held) = (stop.clone(), wake.clone(), held.clone());
                move || hold(socket, queue, treatment, &stop, &wake, &held)
            })?;
        Ok(Self {
            queue,
            held,
            stop,
            wake,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Lets every held packet go and ends the thread (idempotent).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.write(1);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Socket {
    fd: OwnedFd,
    buffer: Vec<u8>,
}

fn bind_free_queue(whole_packets: bool) -> io::Result<(Socket, u16)> {
    let mut last = io::Error::other("no queue number tried");
    for queue in QUEUE_NUMBERS {
        let mut socket = Socket::open()?;
        match socket.bind(queue, whole_packets) {
            Ok(()) => return Ok((socket, queue)),
            // Another process (or another delay of ours) has it.
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) => last = error,
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::new(
        last.kind(),
        format!(
            "every NFQUEUE number from {} to {} is taken: {last}",
            QUEUE_NUMBERS.start,
            QUEUE_NUMBERS.end - 1
        ),
    ))
}

impl Socket {
    fn open() -> io::Result<Self> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        // Room for bursts; past it the kernel drops (or, fail-open, passes) packets.
        let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &(4 << 20));
        Ok(Self {
            fd,
            // Room for a whole 64 KiB packet and its headers.
            buffer: vec![0; 128 << 10],
        })
    }

    fn bind(&mut self, queue: u16, whole_packets: bool) -> io::Result<()> {
        let mut bind = Message::new(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, queue);
        bind.attribute(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0]);
        self.request(bind)?;
        let mut config = Message::new(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, queue);
        let (range, mode) = if whole_packets {
            (0xffff_u32, NFQNL_COPY_PACKET)
        } else {
            (0, NFQNL_COPY_META)
        };
        let mut params = range.to_be_bytes().to_vec();
        params.push(mode);
        config.attribute(NFQA_CFG_PARAMS, &params);
        config.attribute(NFQA_CFG_QUEUE_MAXLEN, &QUEUE_MAX_LEN.to_be_bytes());
        config.attribute(NFQA_CFG_MASK, &NFQA_CFG_F_FAIL_OPEN.to_be_bytes());
        config.attribute(NFQA_CFG_FLAGS, &NFQA_CFG_F_FAIL_OPEN.to_be_bytes());
        self.request(config)
    }

    /// Sends a request and waits for its acknowledgement.
    fn request(&mut self, message: Message) -> io::Result<()> {
        self.send(&message.bytes)?;
        loop {
            let size = self.receive(MsgFlags::empty())?;
            for (kind, payload) in messages(&self.buffer[..size]) {
                if kind == NLMSG_ERROR && payload.len() >= 4 {
                    let errno = i32::from_ne_bytes(payload[..4].try_into().unwrap_or_default());
                    return match errno {
                        0 => Ok(()),
                        errno => Err(io::Error::from_raw_os_error(-errno)),
                    };
                }
            }
        }
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        socket::send(self.fd.as_raw_fd(), bytes, MsgFlags::empty())?;
        Ok(())
    }

    fn receive(&mut self, flags: MsgFlags) -> io::Result<usize> {
        Ok(socket::recv(self.fd.as_raw_fd(), &mut self.buffer, flags)?)
    }
}

/// One nfnetlink message being built.
struct Message {
    bytes: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16, queue: u16) -> Self {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
        bytes.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // sequence
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        bytes.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]); // family, version
        bytes.extend_from_slice(&queue.to_be_bytes());
        let mut message = Self { bytes };
        message.set_length();
        message
    }

    fn attribute(&mut self, kind: u16, value: &[u8]) {
        let length = 4 + value.len();
        self.bytes.extend_from_slice(&(length as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(value);
        self.bytes.resize(self.bytes.len().next_multiple_of(4), 0);
        self.set_length();
    }

    fn set_length(&mut self) {
        let length = (self.bytes.len() as u32).to_ne_bytes();
        self.bytes[..4].copy_from_slice(&length);
    }
}

/// The (type, payload) of each netlink message in `bytes`.
fn messages(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if bytes.len() < 16 {
            return None;
        }
        let length = u32::from_ne_bytes(bytes[..4].try_into().ok()?) as usize;
        if length < 16 || length > bytes.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(bytes[4..6].try_into().ok()?);
        let payload = &bytes[16..length];
        bytes = &bytes[length.next_multiple_of(4).min(bytes.len())..];
        Some((kind, payload))
    })
}

/// The packet id of a queued-packet message's payload (after its nfgenmsg), and the
/// packet itself when it was copied.
fn packet(payload: &[u8]) -> Option<(u32, Option<&[u8]>)> {
    let mut attributes = payload.get(4..)?;
    let (mut id, mut data) = (None, None);
    while attributes.len() >= 4 {
        let length = u16::from_ne_bytes(attributes[..2].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(attributes[2..4].try_into().ok()?) & 0x3fff;
        if length < 4 || length > attributes.len() {
            break;
        }
        match kind {
            NFQA_PACKET_HDR if length >= 8 => {
                id = Some(u32::from_be_bytes(attributes[4..8].try_into().ok()?));
            }
            NFQA_PAYLOAD => data = Some(&attributes[4..length]),
            _ => {}
        }
        attributes = &attributes[length.next_multiple_of(4).min(attributes.len())..];
    }
    id.map(|id| (id, data))
}

/// Accepts packet `id`, replacing its bytes with `payload` when given.
fn verdict(queue: u16, id: u32, payload: Option<&[u8]>) -> Message {
    let mut message = Message::new(NFQNL_MSG_VERDICT, NLM_F_REQUEST, queue);
    let mut header = NF_ACCEPT.to_be_bytes().to_vec();
    header.extend_from_slice(&id.to_be_bytes());
    message.attribute(NFQA_VERDICT_HDR, &header);
    if let Some(payload) = payload {
        message.attribute(NFQA_PAYLOAD, payload);
    }
    message
}

/// Flips one random bit past the IP header (IPv4's own length, IPv6's fixed 40 bytes), so
/// the transport checksum, not the IP layer, finds it.
fn corrupt(packet: &mut [u8], rng: &mut impl Rng) {
    let header = match packet.first().map(|byte| byte >> 4) {
        Some(4) => usize::from(packet[0] & 0x0f) * 4,
        Some(6) => 40,
        _ => 0,
    };
    let start = if header < packet.len() { header } else { 0 };
    if packet.len() > start {
        let at = rng.random_range(start..packet.len());
        packet[at] ^= 1 << rng.random_range(0..8);
    }
}

/// A packet waiting: when it is due, when it came, its id.
type Waiting = Reverse<(Instant, Instant, u32)>;

fn hold(
    mut socket: Socket,
    queue: u16,
    treatment: Treatment,
    stop: &AtomicBool,
    wake: &EventFd,
    held: &Held,
) {
    let mut waiting: BinaryHeap<Waiting> = BinaryHeap::new();
    // The new bytes of the corrupted packets among them.
    let mut corrupted: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut rng = rand::rng();
    let release = |socket: &Socket,
                   waiting: &mut BinaryHeap<Waiting>,
                   corrupted: &mut HashMap<u32, Vec<u8>>,
                   all: bool| {
        let now = Instant::now();
        let mut batch = Vec::new();
        while let Some(Reverse((due, came, id))) = waiting.peek().copied() {
            if !all && due > now {
                break;
            }
            waiting.pop();
            let payload = corrupted.remove(&id);
            batch.extend_from_slice(&verdict(queue, id, payload.as_deref()).bytes);
            held.packets.fetch_add(1, Ordering::Relaxed);
            let us = now.duration_since(came).as_micros() as u64;
            held.held_us.fetch_add(us, Ordering::Relaxed);
            if batch.len() > 32 << 10 {
                let _ = socket.send(&batch);
                batch.clear();
            }
        }
        if !batch.is_empty()
            && let Err(error) = socket.send(&batch)
        {
            tracing::warn!(queue, %error, "cannot release delayed packets");
        }
    };
    while !stop.load(Ordering::SeqCst) {
        let timeout = match waiting.peek() {
            Some(Reverse((due, _, _))) => due
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(1000) as u16,
            None => 1000,
        };
        let mut fds = [
            PollFd::new(socket.fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll::poll(&mut fds, PollTimeout::from(timeout));
        let readable = fds[0]
            .revents()
            .is_some_and(|events| events.contains(PollFlags::POLLIN));
        if readable {
            loop {
                let size = match socket.receive(MsgFlags::MSG_DONTWAIT) {
                    Ok(size) => size,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => {
                        tracing::warn!(queue, %error, "cannot read the delay queue");
                        break;
                    }
                };
                let came = Instant::now();
                let packets = messages(&socket.buffer[..size])
                    .filter(|(kind, _)| *kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)
                    .filter_map(|(_, payload)| packet(payload));
                for (id, data) in packets {
                    if let Some(data) = data
                        && rng.random_range(0..10_000) < treatment.corrupt_per_10000
                    {
                        let mut bytes = data.to_vec();
                        corrupt(&mut bytes, &mut rng);
                        corrupted.insert(id, bytes);
                        held.corrupted.fetch_add(1, Ordering::Relaxed);
                    }
                    waiting.push(Reverse((came + hold_for(treatment, &mut rng), came, id)));
                }
            }
        }
        release(&socket, &mut waiting, &mut corrupted, false);
    }
    release(&socket, &mut waiting, &mut corrupted, true);
}

fn hold_for(treatment: Treatment, rng: &mut impl Rng) -> Duration {
    if treatment.jitter.is_zero() {
        return treatment.delay;
    }
    let jitter = treatment.jitter.as_micros() as i64;
    let offset = rng.random_range(-jitter..=jitter);
    let us = (treatment.delay.as_micros() as i64 + offset).max(0) as u64;
    Duration::from_micros(us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_its_length_and_padded_attributes() {
        let mut message = Message::new(NFQNL_MSG_CONFIG, NLM_F_REQUEST, 29_000);
        message.attribute(NFQA_CFG_PARAMS, &[0, 0, 0, 0, NFQNL_COPY_META]);
        assert_eq!(message.bytes.len(), 16 + 4 + 12);
        assert_eq!(
            u32::from_ne_bytes(message.bytes[..4].try_into().unwrap()),
            32
        );
        assert_eq!(&message.bytes[18..20], &29_000u16.to_be_bytes());
        assert_eq!(
            u16::from_ne_bytes(message.bytes[20..22].try_into().unwrap()),
            9
        );
    }

    #[test]
    fn the_packet_id_is_read_from_its_header_attribute() {
        let mut message = Message::new(NFQNL_MSG_PACKET, 0, 1);
        message.attribute(7, &[1, 2, 3]);
        message.attribute(NFQA_PACKET_HDR, &[0, 0, 1, 2, 8, 0, 3]);
        message.attribute(NFQA_PAYLOAD, &[0x45, 1, 2]);
        let (kind, payload) = messages(&message.bytes).next().unwrap();
        assert_eq!(kind, (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET);
        assert_eq!(packet(payload), Some((0x0102, Some(&[0x45, 1, 2][..]))));
        assert_eq!(packet(&payload[..6]), None);
    }

    #[test]
    fn corruption_flips_one_bit_past_the_ip_header() {
        let mut rng = rand::rng();
        for _ in 0..200 {
            let original: Vec<u8> = [0x45].into_iter().chain(1..=59).collect();
            let mut packet = original.clone();
            corrupt(&mut packet, &mut rng);
            let flipped: Vec<usize> = (0..packet.len())
                .filter(|i| packet[*i] != original[*i])
                .collect();
            assert_eq!(flipped.len(), 1);
            assert!(
                flipped[0] >= 20,
                "flipped byte {} of the IP header",
                flipped[0]
            );
            assert_eq!((packet[flipped[0]] ^ original[flipped[0]]).count_ones(), 1);
        }
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let delay = Treatment {
            delay: Duration::from_millis(100),
            jitter: Duration::from_millis(10),
            corrupt_per_10000: 0,
        };
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let held = hold_for(delay, &mut rng);
            assert!((Duration::from_millis(90)..=Duration::from_millis(110)).contains(&held));
        }
    }
}
