// ferry: inter-process communication for Linux. One include for everything.
#pragma once

// os: the only layer that talks to the kernel
#include "ferry/os/error.hpp"     // ferry::error, ferry::errc, ferry::result<T>
#include "ferry/os/clock.hpp"     // deadlines on the monotonic clock
#include "ferry/os/fd.hpp"        // Fd: RAII file descriptor
#include "ferry/os/futex.hpp"     // futex_wait / futex_wake across processes
#include "ferry/os/process.hpp"   // Credentials, ProcessId (PID-reuse-proof liveness)
#include "ferry/os/segment.hpp"   // Segment: posix, file, memfd and System V shared memory
#include "ferry/os/sealed.hpp"    // SealedPayload: a memfd sealed against change, handed over by descriptor
#include "ferry/os/registry.hpp"  // list, remove and garbage-collect ferry objects
#include "ferry/os/file.hpp"      // lock files and open-file-description locks

// sync: primitives that live in shared memory and work between processes
#include "ferry/sync/wait.hpp"       // WaitStrategy (adaptive, busy_poll, block), WaitPoint
#include "ferry/sync/mutex.hpp"      // Mutex (robust), lock_all
#include "ferry/sync/semaphore.hpp"  // Semaphore (counting, binary, bounded)
#include "ferry/sync/condvar.hpp"    // CondVar (survives killed waiters)
#include "ferry/sync/spin_lock.hpp"  // SpinLock (bounded backoff, dead-holder takeover)
#include "ferry/sync/file_lock.hpp"  // FileLock (shared/exclusive, released at death)
#include "ferry/sync/monitor.hpp"    // Monitor<T>: value + mutex + condition
#include "ferry/sync/named.hpp"      // Named<T>: any of them in a segment of its own
#include "ferry/sync/inspect.hpp"    // what ferry ls shows about them

// transports: byte streams, sockets, framing and servers
#include "ferry/transport/stream.hpp"   // ByteStream: blocking/try/timed reads and writes, EOF, no SIGPIPE
#include "ferry/transport/pipe.hpp"     // Pipe: anonymous pipe, ends handed to children
#include "ferry/transport/fifo.hpp"     // Fifo: named pipe with blocking, try and timed opens
#include "ferry/transport/socket.hpp"   // UnixSocket, TcpSocket, Listener, UnixDatagram, UdpSocket
#include "ferry/transport/framing.hpp"  // FramedStream: length-prefixed frames with a maximum size
#include "ferry/transport/server.hpp"   // IterativeServer, ConcurrentServer (epoll)
#include "ferry/transport/endpoint.hpp"  // Endpoint strings, Sender/Receiver on every transport

// messaging: moving messages between processes
#include "ferry/messaging/channel.hpp"  // Channel: lock-free link between two processes
#include "ferry/messaging/loan.hpp"     // Loan: large messages handed over by reference (copy small, map large)
#include "ferry/messaging/mailbox.hpp"        // Mailbox: many senders, many receivers, priorities, leases
#include "ferry/messaging/mailbox_set.hpp"    // MailboxSet: wait on several mailboxes and channels at once
#include "ferry/messaging/inbox.hpp"          // Inbox, send_to(pid or name): direct addressing
#include "ferry/messaging/inspect.hpp"  // what ferry ls shows about them
#include "ferry/messaging/endpoints.hpp"  // open_sender/open_receiver for every endpoint, shm:// included

// patterns: built on messaging and transports
#include "ferry/patterns/rpc.hpp"  // rpc::Server, rpc::Client: calls with deadlines, cancellation, concurrent servers
#include "ferry/patterns/topic.hpp"  // Topic: publish/subscribe, every subscriber sees every message
