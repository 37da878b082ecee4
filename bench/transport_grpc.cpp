// gRPC (Debian: libgrpc++-dev, protobuf-compiler-grpc) over a UNIX socket in
// the measurement's directory: grpc.unix, measured as ferry's rpc and
// zmq.reqrep are (transports_rpc.cpp; kServes in ipc_worker.hpp). The
// responder runs a synchronous grpc::Server with one unary method,
// ferry_bench.Echo/Call (rpc_bench.proto), which echoes its bytes; send() is
// one blocking call on a stub, and receive() hands out its reply.
//
// The server is built and started in open(), before the initiator may call;
// its handlers run on gRPC's own thread pool, all in the responder's process
// (pinned like every responder), and serve() waits for the initiator's last
// call, then shuts the server down. Each calling process makes its own channel
// at its first call, so that no gRPC object exists before the harness forks
// the responder and the senders (gRPC's threads do not survive a fork), and
// drops it after its last. Calls have no deadline, gRPC's default: the
// harness's watchdog bounds a lost peer.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "ipc_transports.hpp"
#include "rpc_bench.grpc.pb.h"

namespace ferry::bench {
namespace {

std::string address(const Spec& spec) { return "unix:" + spec.dir + "/grpc.sock"; }

// gRPC's default limit is 4 MiB per received message; --sizes goes to 64 MiB.
constexpr int kUnlimited = -1;

class EchoService final : public ferry_bench::Echo::Service {
 public:
  explicit EchoService(const Spec& spec) : spec_(spec), tally_(spec) {}

  grpc::Status Call(grpc::ServerContext*, const ferry_bench::Payload* request, ferry_bench::Payload* reply) override {
    const std::string& data = request->data();
    if (data.size() != spec_.size) fail("a request of %zu bytes, expected %zu", data.size(), spec_.size);
    bool last = false;
    {
      // Several callers' handlers may run at once on gRPC's threads.
      const std::lock_guard lock(mutex_);
      last = tally_.take(reinterpret_cast<const std::byte*>(data.data()));
    }
    reply->set_data(data);
    if (last) {
      done_.store(true, std::memory_order_release);
      done_.notify_one();
    }
    return grpc::Status::OK;
  }

  void wait_done() const { done_.wait(false, std::memory_order_acquire); }
  // After the server's shutdown: no handler runs any more.
  void record(SharedArea& area) const { tally_.record(area); }

 private:
  const Spec& spec_;
  std::mutex mutex_;
  detail::ResponderTally tally_;
  std::atomic<bool> done_{false};
};

struct GrpcUnix : TransportBase {
  static constexpr bool kServes = true;
  static constexpr bool kManySenders = true;

  void open(Side side, const Spec& spec) {
    spec_ = &spec;
    if (side == Side::initiator) return;
    service_.emplace(spec);
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address(spec), grpc::InsecureServerCredentials());
    builder.SetMaxReceiveMessageSize(kUnlimited);
    builder.SetMaxSendMessageSize(kUnlimited);
    builder.RegisterService(&*service_);
    server_ = builder.BuildAndStart();
    if (!server_) fail("gRPC: cannot serve at %s", address(spec).c_str());
  }

  void serve(const Spec&, SharedArea& area) {
    service_->wait_done();
    server_->Shutdown();  // waits for the running handlers: the last reply goes out first
    service_->record(area);
  }

  void send(const std::byte* message, std::size_t size) {
    if (!stub_) {
      grpc::ChannelArguments arguments;
      arguments.SetMaxReceiveMessageSize(kUnlimited);
      arguments.SetMaxSendMessageSize(kUnlimited);
      stub_ = ferry_bench::Echo::NewStub(
          grpc::CreateCustomChannel(address(*spec_), grpc::InsecureChannelCredentials(), arguments));
    }
    request_.set_data(message, size);
    grpc::ClientContext context;  // one per call, as gRPC requires
    const grpc::Status status = stub_->Call(&context, request_, &reply_);
    if (!status.ok()) fail("gRPC call: %s", status.error_message().c_str());
    if (reply_.data().size() != size) fail("a reply of %zu bytes, expected %zu", reply_.data().size(), size);
    // This process's last call (kStop too): its connection closes, which the
    // server's shutdown would otherwise wait seconds for.
    if (read_stamp(message, size) & kLast) stub_.reset();
  }

  const std::byte* receive(std::byte*, std::size_t) { return reinterpret_cast<const std::byte*>(reply_.data().data()); }

  // The server, shut down in serve(), is not destroyed: the harness ends the
  // process with _exit, and destroying the last gRPC object runs gRPC's
  // global shutdown, which waited up to 10 s for a poller thread (and so
  // for the watchdog) in about one 1 MiB stream of ten.
  void close(Side) { stub_.reset(); }

  const Spec* spec_ = nullptr;
  std::optional<EchoService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ferry_bench::Echo::Stub> stub_;
  ferry_bench::Payload request_;
  ferry_bench::Payload reply_;
};

}  // namespace

void add_grpc_transport(std::vector<TransportInfo>& list) {
  list.push_back(make_transport<GrpcUnix>("grpc.unix", Group::peer,
                                          "gRPC unary echo calls (synchronous server and stub) over a UNIX socket"));
}

}  // namespace ferry::bench
