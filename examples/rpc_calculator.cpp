// A calculator served over rpc: one process serves "add" (typed structs) and
// "shout" (raw bytes); another calls them. The same code runs over shm://,
// unix:// or tcp:// by changing the endpoint string. Run:
//   rpc_calculator [calls] [endpoint]        (default: 1000 calls, shm://calc-<pid>)
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ferry/ferry.hpp"

namespace {

using namespace std::chrono_literals;

struct Operands {
  std::int64_t a, b;
};
struct Sum {
  std::int64_t value;
};

int fail(const char* what, const ferry::error& e) {
  std::fprintf(stderr, "%s: %s\n", what, e.message().c_str());
  return 1;
}

// Serves until the parent closes the pipe `until_closed`.
int serve(ferry::rpc::Server& server, int ready_fd, int until_closed) {
  (void)server.add<Operands>("add", [](const ferry::rpc::CallContext&, const Operands& in) -> ferry::result<Sum> {
    return Sum{in.a + in.b};
  });
  (void)server.add("shout", [](const ferry::rpc::CallContext& call, std::span<const std::byte> text)
                                -> ferry::result<ferry::rpc::Bytes> {
    // The caller's uid, attested by the kernel (shm, unix): authorize here.
    if (call.caller() && call.caller()->uid != ::geteuid()) {
      return ferry::error(ferry::errc::permission_denied, "shout", "only for my own user");
    }
    ferry::rpc::Bytes loud(text.begin(), text.end());
    for (std::byte& c : loud) c = static_cast<std::byte>(std::toupper(std::to_integer<unsigned char>(c)));
    return loud;
  });
  if (auto started = server.start(); !started) return fail("server", started.error());
  (void)!::write(ready_fd, "r", 1);
  char byte;
  while (::read(until_closed, &byte, 1) > 0) {
  }
  server.stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const long calls = argc > 1 ? std::atol(argv[1]) : 1000;
  const std::string endpoint = argc > 2 ? argv[2] : "shm://calc-" + std::to_string(::getpid());

  auto server = ferry::rpc::Server::create(endpoint);  // before fork: a tcp port 0 is bound here
  if (!server) return fail("server", server.error());
  int ready[2], done[2];
  if (::pipe(ready) != 0 || ::pipe(done) != 0) return 1;
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(done[1]);
    ::_exit(serve(**server, ready[1], done[0]));
  }
  ::close(done[0]);
  char byte;
  if (::read(ready[0], &byte, 1) != 1) return 1;

  auto client = ferry::rpc::Client::connect((*server)->endpoint());
  if (!client) return fail("client", client.error());
  for (long i = 0; i < calls; ++i) {
    auto sum = (*client)->call_for<Sum>("add", Operands{i, 2 * i}, 5s);
    if (!sum) return fail("add", sum.error());
    if (sum->value != 3 * i) return std::fprintf(stderr, "add: wrong sum for %ld\n", i), 1;
  }
  const std::string text = "hello from " + std::to_string(::getpid());
  auto loud = (*client)->call_for("shout", std::as_bytes(std::span(text)), 5s);
  if (!loud) return fail("shout", loud.error());
  std::printf("%ld sums, and: %.*s\n", calls, static_cast<int>(loud->size()), reinterpret_cast<const char*>(loud->data()));

  ::close(done[1]);
  int status = 0;
  ::waitpid(child, &status, 0);
  if ((*server)->endpoint().scheme == ferry::Endpoint::Scheme::shm) (void)ferry::rpc::Server::destroy(endpoint);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
