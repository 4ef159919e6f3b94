// The baseline of the HTTP ceiling (scripts/bench-http, issue 19): a
// minimal Boost.Beast HTTP/1.1 server, written the way Beast's own examples
// are (example/http/server/async since Boost 1.70: a tcp_stream, a 30 s
// timeout set before each read), that answers every request with one
// constant JSON body. No router, no logging, no metrics, no other limits:
// what the framework's server is compared against, on the same number of
// network threads. --no-timeout leaves out the read timeout, as the first
// version of this baseline did.
//
//   beast_baseline --listen 127.0.0.1:0 --threads 2 --body-file body.json
//
// Prints "listening on port N" once it accepts connections; runs until
// SIGINT or SIGTERM. A benchmark tool, not a test.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"

namespace {

// Each read has Beast's examples' 30 s timeout (--no-timeout: none).
bool g_read_timeout = true;

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// One keep-alive connection: read a request, write the constant response,
// repeat.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const std::string& body)
      : stream_(std::move(socket)), body_(body) {}

  void Start() { Read(); }

 private:
  void Read() {
    request_ = {};
    if (g_read_timeout) stream_.expires_after(std::chrono::seconds(30));
    http::async_read(stream_, buffer_, request_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return self->Close();
                       self->Write();
                     });
  }

  void Write() {
    response_ = {};
    response_.result(http::status::ok);
    response_.version(request_.version());
    response_.set(http::field::content_type, "application/json");
    response_.keep_alive(request_.keep_alive());
    response_.body() = body_;
    response_.prepare_payload();
    http::async_write(
        stream_, response_,
        [self = shared_from_this()](beast::error_code ec, size_t) {
          if (ec || !self->response_.keep_alive()) return self->Close();
          self->Read();
        });
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  const std::string& body_;
};

void Accept(tcp::acceptor& acceptor, asio::io_context& io,
            const std::string& body) {
  acceptor.async_accept(
      asio::make_strand(io),
      [&acceptor, &io, &body](beast::error_code ec, tcp::socket socket) {
        if (ec == asio::error::operation_aborted) return;
        if (!ec) std::make_shared<Session>(std::move(socket), body)->Start();
        Accept(acceptor, io, body);
      });
}

int Usage(const char* why) {
  std::fprintf(stderr,
               "beast_baseline: %s\nusage: beast_baseline [--listen HOST:PORT] "
               "[--threads N] [--body-file FILE] [--no-timeout]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:0";
  int threads = 2;
  std::string body = R"({"ok":true})";
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--no-timeout") {
      g_read_timeout = false;
      continue;
    }
    if (i + 1 >= argc)
      return Usage("every flag but --no-timeout takes a value");
    const char* value = argv[++i];
    if (arg == "--listen") {
      listen = value;
    } else if (arg == "--threads") {
      if (!absl::SimpleAtoi(value, &threads) || threads < 1 || threads > 256) {
        return Usage("--threads must be 1..256");
      }
    } else if (arg == "--body-file") {
      std::ifstream in(value, std::ios::binary);
      if (!in) return Usage("cannot read --body-file");
      body.assign(std::istreambuf_iterator<char>(in),
                  std::istreambuf_iterator<char>());
    } else {
      return Usage("unknown flag");
    }
  }
  const size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(absl::string_view(listen).substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return Usage("--listen must be HOST:PORT");
  }
  beast::error_code ec;
  const auto address = asio::ip::make_address(listen.substr(0, colon), ec);
  if (ec) return Usage("--listen: bad host address");

  asio::io_context io(threads);
  tcp::acceptor acceptor(io);
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  acceptor.open(endpoint.protocol());
  acceptor.set_option(asio::socket_base::reuse_address(true));
  acceptor.bind(endpoint);
  acceptor.listen(asio::socket_base::max_listen_connections);
  std::printf("listening on port %d\n", acceptor.local_endpoint().port());
  std::fflush(stdout);
  Accept(acceptor, io, body);

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&io](beast::error_code, int) { io.stop(); });
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (std::thread& t : pool) t.join();
  return 0;
}
