// The table of transports, in report order: the floors, the kernel's own
// mechanisms, the peer libraries (each only when it was found at configure
// time), then ferry's transports (the Mailbox on NATS when the nats backend is
// built) and its rpc.
#include "ipc_transports.hpp"

namespace ferry::bench {

std::vector<TransportInfo> all_transports() {
  std::vector<TransportInfo> list;
  add_floor_transports(list);
  add_os_transports(list);
#ifdef FERRY_BENCH_HAVE_BOOST
  add_boost_transport(list);
#else
  list.push_back(unavailable_transport("boost.mq", Group::peer,
                                       "not built: Boost headers (Debian: libboost-dev) were not found"));
#endif
#ifdef FERRY_BENCH_HAVE_ZMQ
  add_zmq_transports(list);
#else
  for (const char* name : {"zmq.ipc", "zmq.reqrep"}) {
    list.push_back(unavailable_transport(name, Group::peer, "not built: libzmq (Debian: libzmq3-dev) was not found"));
  }
#endif
#ifdef FERRY_BENCH_HAVE_NNG
  add_nng_transport(list);
#else
  list.push_back(unavailable_transport("nng.ipc", Group::peer, "not built: nng (Debian: libnng-dev) was not found"));
#endif
#ifdef FERRY_BENCH_HAVE_ICEORYX
  add_iceoryx_transports(list);
#else
  for (const char* name : {"iceoryx.poll", "iceoryx.waitset"}) {
    list.push_back(unavailable_transport(
        name, Group::peer,
        "not built: iceoryx (Debian: libiceoryx-posh-dev, libiceoryx-hoofs-dev) was not found"));
  }
#endif
#ifdef FERRY_BENCH_HAVE_GRPC
  add_grpc_transport(list);
#else
  list.push_back(unavailable_transport(
      "grpc.unix", Group::peer,
      "not built: gRPC (Debian: libgrpc++-dev, protobuf-compiler-grpc; scripts/install-deps.sh --grpc) was not "
      "found, or the build is sanitized"));
#endif
  add_ferry_transports(list);
#ifdef FERRY_BENCH_HAVE_NATS
  add_nats_transport(list);
#else
  list.push_back(unavailable_transport(
      "ferry.mailbox.nats", Group::ferry,
      "not built: the nats backend ferry::nats (nats.c, Debian: libnats-dev) was not found"));
#endif
  add_rpc_transports(list);
  return list;
}

}  // namespace ferry::bench
