// What the nats:// backend shares between its files: the nats.c handles of a
// Connection, owners for nats.c objects, and the mapping of nats.c statuses
// to ferry errors.
#pragma once

#include <nats/nats.h>

#include <memory>
#include <string>
#include <string_view>

#include "ferry/nats/connection.hpp"
#include "ferry/os/error.hpp"

namespace ferry::nats {
namespace detail {

struct ConnectionState {
  Address address;
  natsConnection* connection = nullptr;
  jsCtx* jetstream = nullptr;

  ConnectionState() = default;
  ConnectionState(const ConnectionState&) = delete;
  ConnectionState& operator=(const ConnectionState&) = delete;
  ~ConnectionState();
};

// Owners of nats.c objects.
template <class T, void (*Destroy)(T*)>
struct Destroyer {
  void operator()(T* object) const noexcept { Destroy(object); }
};
template <class T, void (*Destroy)(T*)>
using Owned = std::unique_ptr<T, Destroyer<T, Destroy>>;

using OwnedMessage = Owned<natsMsg, natsMsg_Destroy>;
using OwnedSubscription = Owned<natsSubscription, natsSubscription_Destroy>;
using OwnedStreamInfo = Owned<jsStreamInfo, jsStreamInfo_Destroy>;
using OwnedConsumerInfo = Owned<jsConsumerInfo, jsConsumerInfo_Destroy>;
using OwnedPubAck = Owned<jsPubAck, jsPubAck_Destroy>;

/// A ferry error for a failed nats.c call: the code from the status and the
/// JetStream error code, the detail from `what` and nats.c's last error text.
error nats_error(natsStatus status, jsErrCode js_code, std::string_view object, std::string_view what);
inline error nats_error(natsStatus status, std::string_view object, std::string_view what) {
  return nats_error(status, static_cast<jsErrCode>(0), object, what);
}

/// JetStream's "not enabled" answer also comes while a cluster elects a
/// leader (and "no responders" while a server restarts): worth retrying.
bool transient(natsStatus status, jsErrCode js_code) noexcept;

}  // namespace detail
}  // namespace ferry::nats
