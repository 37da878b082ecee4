// ferry: inter-process communication for Linux. One include for everything.
#pragma once

// os: the only layer that talks to the kernel
#include "ferry/os/error.hpp"     // ferry::error, ferry::errc, ferry::result<T>
#include "ferry/os/clock.hpp"     // deadlines on the monotonic clock
#include "ferry/os/fd.hpp"        // Fd: RAII file descriptor
#include "ferry/os/futex.hpp"     // futex_wait / futex_wake across processes
#include "ferry/os/process.hpp"   // Credentials, ProcessId (PID-reuse-proof liveness)
#include "ferry/os/segment.hpp"   // Segment: posix, file, memfd and System V shared memory
#include "ferry/os/registry.hpp"  // list, remove and garbage-collect ferry objects
