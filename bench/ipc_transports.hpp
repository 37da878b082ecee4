// The transports of ferry's transport benchmark: one table, in the order the
// report prints them. Each file adds its own; a transport whose library was not
// found at configure time is still listed, as "not available" with the reason.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "ipc_worker.hpp"

namespace ferry::bench {

struct TransportInfo {
  std::string name;         // as the report and --only spell it: "unix.stream"
  Group group = Group::os;
  std::string description;  // one line: what exactly is measured
  std::string unavailable;  // "" or why it cannot run here at all
  bool needs_roudi = false; // the coordinator starts iox-roudi when one of these is selected
  bool needs_nats_server = false;  // the coordinator starts a nats-server (JetStream) when one of these is selected
  bool many_senders = false;  // also measured with several sending processes
  bool replies_64 = false;    // a round trip with a larger request gets a 64-byte reply (the generic echo)
  std::string (*not_applicable)(Pattern, std::size_t) = nullptr;  // see ipc_worker.hpp
  void (*run)(const Spec&, SharedArea&) = nullptr;  // in A; never returns (run_measurement)
};

template <class Transport>
TransportInfo make_transport(std::string name, Group group, std::string description) {
  TransportInfo info;
  info.name = std::move(name);
  info.group = group;
  info.description = std::move(description);
  info.not_applicable = &Transport::not_applicable;
  info.many_senders = Transport::kManySenders;
  info.replies_64 = !Transport::kServes && !Transport::kCustomRtt;
  info.run = &run_measurement<Transport>;
  return info;
}

inline TransportInfo unavailable_transport(std::string name, Group group, std::string reason) {
  TransportInfo info;
  info.name = std::move(name);
  info.group = group;
  info.unavailable = std::move(reason);
  return info;
}

// Every transport this build knows, available or not (ipc_registry.cpp).
std::vector<TransportInfo> all_transports();

// One function per source file.
void add_floor_transports(std::vector<TransportInfo>& list);    // transports_floor.cpp
void add_os_transports(std::vector<TransportInfo>& list);       // transports_os.cpp
void add_boost_transport(std::vector<TransportInfo>& list);     // transport_boost.cpp
void add_zmq_transports(std::vector<TransportInfo>& list);      // transport_zmq.cpp
void add_nng_transport(std::vector<TransportInfo>& list);       // transport_nng.cpp
void add_iceoryx_transports(std::vector<TransportInfo>& list);  // transport_iceoryx.cpp
void add_grpc_transport(std::vector<TransportInfo>& list);      // transport_grpc.cpp
void add_ferry_transports(std::vector<TransportInfo>& list);    // transports_ferry.cpp
void add_rpc_transports(std::vector<TransportInfo>& list);      // transports_rpc.cpp
void add_nats_transport(std::vector<TransportInfo>& list);      // transport_nats.cpp

}  // namespace ferry::bench
