// A small synchronous HTTP/1.1 client for tests of the HTTP server.
//
//   ASSIGN_OR_RETURN(auto client, http_test::TestClient::Connect(port));
//   absl::StatusOr<http_test::ClientResponse> r = client->Send("GET", "/x");
//
// One client is one TCP connection, reused across requests while the server
// keeps it alive. Every operation gives up after the client's timeout, so a
// broken server fails a test instead of hanging it.
//
// Thread-safety: a TestClient is used by one thread at a time.
#ifndef TESTS_FRAMEWORK_HTTP_CLIENT_H_
#define TESTS_FRAMEWORK_HTTP_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "framework/http/message.h"

namespace cqrs {
namespace http_test {

struct ClientResponse {
  int status = 0;
  http::HeaderList headers;
  std::string body;
  // False when the server announced it closes the connection.
  bool keep_alive = false;

  // The first value of header `name` (case-insensitive), or nullopt.
  absl::optional<std::string> Header(absl::string_view name) const;
};

class TestClient {
 public:
  // Connects to 127.0.0.1:`port`. kUnavailable when the connection fails.
  static absl::StatusOr<std::unique_ptr<TestClient>> Connect(
      int port, absl::Duration timeout = absl::Seconds(10));
  // As Connect(), with the kernel's smallest receive buffer set before the
  // connection, so that a client that stops reading backs the server up
  // quickly. (Shrinking it after the handshake makes the kernel drop what
  // the window it advertised before lets in; the server then retransmits
  // with a backoff of many seconds, even once the client reads again.)
  static absl::StatusOr<std::unique_ptr<TestClient>> ConnectSmallWindow(
      int port);

  TestClient(const TestClient&) = delete;
  TestClient& operator=(const TestClient&) = delete;
  ~TestClient();

  // Sends one request (with Host and, for a body or POST, Content-Length)
  // and reads the response. kUnavailable when the server closed or reset
  // the connection, kDeadlineExceeded on timeout, kInternal on a response
  // that is not HTTP.
  absl::StatusOr<ClientResponse> Send(absl::string_view method,
                                      absl::string_view target,
                                      absl::string_view body = "",
                                      const http::HeaderList& headers = {});

  // Sent with every later request that has no header of the same name
  // (an Authorization header, say).
  void SetDefaultHeaders(http::HeaderList headers);

  // Gives the socket a larger receive buffer (1 MiB), so that a client of
  // ConnectSmallWindow() that stalled can drain what is left without a
  // round trip per kilobyte.
  void GrowReceiveBuffer();

  // Writes `bytes` as they are.
  absl::Status WriteRaw(absl::string_view bytes);

  // Reads one response.
  absl::StatusOr<ClientResponse> ReadResponse();

  // Sends a GET for a streamed response (Response::stream) and reads its
  // status line and headers; the body follows through ReadStream(). Errors
  // as Send().
  absl::StatusOr<ClientResponse> OpenStream(
      absl::string_view target, const http::HeaderList& headers = {});

  // The next part of the body of the stream OpenStream() opened: the bytes
  // that arrived (at least one). kOutOfRange when the body ended properly
  // (the last chunk), kDeadlineExceeded when nothing came within
  // `timeout`, kUnavailable when the connection closed mid-body.
  absl::StatusOr<std::string> ReadStream(
      absl::Duration timeout = absl::Seconds(10));

  // Waits until the server closes the connection: OK on end of stream or
  // reset, kDeadlineExceeded when it stays open for `timeout`,
  // kFailedPrecondition when data arrives instead.
  absl::Status WaitForClose(absl::Duration timeout = absl::Seconds(10));

 private:
  struct Impl;
  explicit TestClient(std::unique_ptr<Impl> impl);
  static absl::StatusOr<std::unique_ptr<TestClient>> ConnectWith(
      int port, absl::Duration timeout, int receive_buffer);

  std::unique_ptr<Impl> impl_;
};

}  // namespace http_test
}  // namespace cqrs

#endif  // TESTS_FRAMEWORK_HTTP_CLIENT_H_
