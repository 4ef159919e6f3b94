// The Beast side of the server. The structure follows Beast's
// example/http/server/async/http_server_async.cpp and
// example/advanced/server/advanced_server.cpp (boost-1.74): a listener
// accepts, a session per connection loops read -> handle -> write, and the
// handler is a plain function of the request that never touches a socket.
#include "framework/http/server.h"

#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <exception>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/optional.h"
#include "framework/http/internal/failure_limiter.h"
#include "framework/http/internal/tls_context.h"
#include "framework/http/status_mapping.h"
#include "framework/log.h"
#include "framework/uuid.h"
#include "framework/worker_pool.h"

namespace cqrs {
namespace http {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = boost::asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

constexpr absl::string_view kUnmatched = "unmatched";
constexpr char kCorrelationIdHeader[] = "X-Correlation-Id";
constexpr size_t kMaxCorrelationIdLength = 200;
// How long a connection closed after an error keeps reading (and discarding)
// what the client still sends, so that the kernel does not answer that data
// with a reset that could destroy the error response before it is read.
constexpr auto kLingerTime = std::chrono::seconds(5);
// Requests waiting for the operations lane's threads.
constexpr size_t kOperationsQueue = 64;
// How long a TLS connection closing after a response may take to write its
// close_notify.
constexpr auto kTlsCloseTime = std::chrono::seconds(1);
// The first byte of every TLS connection (a handshake record); no HTTP
// request starts with it.
constexpr unsigned char kTlsHandshakeRecord = 0x16;

absl::string_view ToAbsl(beast::string_view text) {
  return absl::string_view(text.data(), text.size());
}

std::string ToString(beast::string_view text) {
  return std::string(text.data(), text.size());
}

std::chrono::nanoseconds ToChrono(absl::Duration duration) {
  return absl::ToChronoNanoseconds(duration);
}

bool IsValidCorrelationId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxCorrelationIdLength) return false;
  for (char c : id) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

bool IsJsonContentType(absl::string_view value) {
  const absl::string_view media_type =
      absl::StripAsciiWhitespace(value.substr(0, value.find(';')));
  return absl::EqualsIgnoreCase(media_type, "application/json");
}

// Header fields whose value the server owns.
bool IsManagedHeader(absl::string_view name) {
  return absl::EqualsIgnoreCase(name, "Content-Length") ||
         absl::EqualsIgnoreCase(name, "Transfer-Encoding") ||
         absl::EqualsIgnoreCase(name, "Connection") ||
         absl::EqualsIgnoreCase(name, "X-Correlation-Id");
}

// Rejects names and values that would break the response framing (header
// injection through CR/LF).
bool IsSafeHeader(absl::string_view name, absl::string_view value) {
  if (name.empty()) return false;
  for (char c : name) {
    if (c <= 0x20 || c >= 0x7f || c == ':') return false;
  }
  for (char c : value) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

// 503 overloaded, for a request the server has no room for now.
Response Overloaded(absl::string_view message) {
  Response response = ErrorResponse(503, "overloaded", message);
  response.SetHeader("Retry-After", "1");
  return response;
}

// 401 for every reason a token is not accepted (framework/http/auth.h).
Response Unauthenticated() {
  Response response =
      ErrorResponse(401, "unauthenticated", "a valid bearer token is required");
  response.SetHeader("WWW-Authenticate", "Bearer");
  return response;
}

Response Forbidden(absl::string_view scope) {
  return ErrorResponse(403, "forbidden",
                       absl::StrCat("this route needs the scope '", scope,
                                    "', which the API key does not have"));
}

Response TooManyFailures(absl::Duration wait) {
  Response response = ErrorResponse(
      429, "too_many_requests",
      "too many failed authentication attempts from this address; retry "
      "later");
  response.SetHeader(
      "Retry-After",
      absl::StrCat(std::max<int64_t>(
          1, absl::ToInt64Seconds(absl::Ceil(wait, absl::Seconds(1))))));
  return response;
}

// Where a new connection goes: into the table, to be answered beyond it
// (max_connections reached, overflow_connections not), or nowhere.
enum class Admission { kRegular, kOverflow, kRefused };

// A queued request's handler runs only if it moves kQueued -> kStarted
// before the queue timeout moves it kQueued -> kAbandoned.
enum class QueueState { kQueued, kStarted, kAbandoned };

class Session;

// Lets Responders post into the io_context only while the server runs: a
// Responder may be called long after the server (and its io_context) is gone.
class DeliveryGate {
 public:
  // Runs `post` under the gate's lock when the gate is open.
  template <typename F>
  void IfOpen(F&& post) {
    absl::MutexLock lock(&mu_);
    if (open_) post();
  }
  void Close() {
    absl::MutexLock lock(&mu_);
    open_ = false;
  }

 private:
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = true;
};

// The StreamWriter of one streamed response. Producers call it from any
// thread; the session takes what is queued on its strand and writes it.
class StreamState : public StreamWriter {
 public:
  // `wake` asks the session to take what is queued; called without mu_.
  explicit StreamState(std::function<void()> wake) : wake_(std::move(wake)) {}

  bool Write(std::string data) override {
    {
      absl::MutexLock lock(&mu_);
      if (ended_ || closing_) return false;
      if (data.empty()) return true;
      buffered_ += data.size();
      pending_.append(data);
      if (std::exchange(wake_scheduled_, true)) return true;
    }
    wake_();
    return true;
  }

  size_t buffered() const override {
    absl::MutexLock lock(&mu_);
    return buffered_;
  }

  void Close() override {
    {
      absl::MutexLock lock(&mu_);
      if (ended_ || std::exchange(closing_, true)) return;
      if (std::exchange(wake_scheduled_, true)) return;
    }
    wake_();
  }

  bool closed() const override {
    absl::MutexLock lock(&mu_);
    return ended_ || closing_;
  }

  void OnClose(std::function<void()> f) override {
    {
      absl::MutexLock lock(&mu_);
      if (!ended_) {
        on_close_ = std::move(f);
        return;
      }
    }
    f();
  }

  void OnWritable(size_t threshold, std::function<void()> f) override {
    {
      absl::MutexLock lock(&mu_);
      if (!ended_ && buffered_ > threshold) {
        writable_threshold_ = threshold;
        on_writable_ = std::move(f);
        return;
      }
    }
    f();
  }

  // The session's side, on its strand.

  // Takes what is queued; `*closing` tells whether Close() was called.
  std::string Take(bool* closing) {
    absl::MutexLock lock(&mu_);
    wake_scheduled_ = false;
    *closing = closing_;
    return std::exchange(pending_, std::string());
  }

  // `bytes` taken earlier reached the socket.
  void Written(size_t bytes) {
    std::function<void()> writable;
    {
      absl::MutexLock lock(&mu_);
      buffered_ -= std::min(bytes, buffered_);
      if (on_writable_ && buffered_ <= writable_threshold_) {
        writable = std::exchange(on_writable_, nullptr);
      }
    }
    if (writable) writable();
  }

  // The stream is over: callbacks run, writes are refused from now on.
  void End() {
    std::function<void()> on_close;
    std::function<void()> writable;
    {
      absl::MutexLock lock(&mu_);
      if (ended_) return;
      ended_ = true;
      pending_.clear();
      buffered_ = 0;
      on_close = std::exchange(on_close_, nullptr);
      writable = std::exchange(on_writable_, nullptr);
    }
    if (writable) writable();
    if (on_close) on_close();
  }

 private:
  const std::function<void()> wake_;

  mutable absl::Mutex mu_;
  std::string pending_ ABSL_GUARDED_BY(mu_);
  // pending_ plus what the session is writing.
  size_t buffered_ ABSL_GUARDED_BY(mu_) = 0;
  bool wake_scheduled_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> on_close_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_writable_ ABSL_GUARDED_BY(mu_);
  size_t writable_threshold_ ABSL_GUARDED_BY(mu_) = 0;
};

// State shared by the listener and all sessions of one server.
struct Core {
  Core(ServerOptions server_options, const Router* server_router,
       std::shared_ptr<net::ssl::context> initial_tls_context)
      : options(std::move(server_options)),
        router(server_router),
        tls(initial_tls_context != nullptr),
        pool(options.worker_threads, options.max_queued_requests),
        operations_pool(options.operations_threads, kOperationsQueue),
        limiter(options.auth.max_failures, options.auth.failure_window),
        high_water(static_cast<size_t>(options.max_connections -
                                       options.max_connections / 4)),
        low_water(static_cast<size_t>(options.max_connections / 2)),
        gate(std::make_shared<DeliveryGate>()),
        tls_context(std::move(initial_tls_context)) {}

  // Constant after construction.
  const ServerOptions options;
  const Router* const router;
  // The server speaks TLS (ServerOptions::tls_cert_file).
  const bool tls;
  WorkerPool pool;
  WorkerPool operations_pool;
  http_internal::FailureLimiter limiter;
  // Pressure begins at high_water regular connections and ends at
  // low_water (see server.h).
  const size_t high_water;
  const size_t low_water;
  const std::shared_ptr<DeliveryGate> gate;

  std::atomic<bool> draining{false};
  // Written under mu; read without it by sessions choosing a timeout.
  std::atomic<bool> under_pressure{false};

  // Open connections. The map owns the sessions (a Responder holds only a
  // weak reference); a session removes itself when its socket is closed.
  struct Entry {
    std::shared_ptr<Session> session;
    bool overflow = false;
  };
  absl::Mutex mu;
  std::unordered_map<Session*, Entry> sessions ABSL_GUARDED_BY(mu);
  size_t regular ABSL_GUARDED_BY(mu) = 0;
  size_t overflow ABSL_GUARDED_BY(mu) = 0;

  // Admits `session` (kRefused when draining or beyond both limits). When
  // this admission starts the pressure, sets `*pressure_began` and appends
  // the sessions already open to `*already_open`: their waits must be cut
  // short.
  Admission Register(std::shared_ptr<Session> session,
                     std::vector<std::shared_ptr<Session>>* already_open,
                     bool* pressure_began) {
    absl::MutexLock lock(&mu);
    if (draining.load()) return Admission::kRefused;
    Admission admission = Admission::kRegular;
    if (regular < static_cast<size_t>(options.max_connections)) {
      ++regular;
    } else if (overflow < static_cast<size_t>(options.overflow_connections)) {
      ++overflow;
      admission = Admission::kOverflow;
    } else {
      return Admission::kRefused;
    }
    if (regular >= high_water && !under_pressure.load()) {
      under_pressure.store(true);
      *pressure_began = true;
      already_open->reserve(sessions.size());
      for (const auto& entry : sessions) {
        already_open->push_back(entry.second.session);
      }
    }
    Session* key = session.get();
    sessions.emplace(
        key, Entry{std::move(session), admission == Admission::kOverflow});
    return admission;
  }

  void Unregister(Session* session) {
    std::shared_ptr<Session> owned;  // Released after the lock.
    absl::MutexLock lock(&mu);
    auto it = sessions.find(session);
    if (it == sessions.end()) return;
    owned = std::move(it->second.session);
    if (it->second.overflow) {
      --overflow;
    } else {
      --regular;
    }
    sessions.erase(it);
    if (under_pressure.load() && regular <= low_water) {
      under_pressure.store(false);
    }
  }

  // The context new TLS connections use; ReloadTls() replaces it, while
  // each connection holds on to the one it started with.
  std::shared_ptr<net::ssl::context> TlsContext() {
    absl::MutexLock lock(&tls_mu);
    return tls_context;
  }
  void SetTlsContext(std::shared_ptr<net::ssl::context> context) {
    absl::MutexLock lock(&tls_mu);
    tls_context = std::move(context);
  }
  absl::Mutex tls_mu;
  std::shared_ptr<net::ssl::context> tls_context ABSL_GUARDED_BY(tls_mu);

  std::vector<std::shared_ptr<Session>> Snapshot() {
    absl::MutexLock lock(&mu);
    std::vector<std::shared_ptr<Session>> all;
    all.reserve(sessions.size());
    for (const auto& entry : sessions) all.push_back(entry.second.session);
    return all;
  }
};

// Handles one connection. Every member function runs on the connection's
// strand, so members need no lock.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, Core* core)
      : stream_(std::move(socket)),
        queue_timer_(stream_.get_executor()),
        stream_timer_(stream_.get_executor()),
        core_(core) {
    beast::error_code ec;
    const tcp::endpoint peer = stream_.socket().remote_endpoint(ec);
    if (!ec) client_address_ = peer.address().to_string();
  }

  // A stream's producers learn that it ended, however the session went.
  ~Session() {
    if (stream_state_ != nullptr) stream_state_->End();
  }

  // Starts serving; `admission` is kRegular or kOverflow.
  void Run(Admission admission) {
    overflow_ = admission == Admission::kOverflow;
    // An overflow connection gets one answer.
    close_after_response_ = overflow_;
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&Session::DoWaitForRequest,
                                            shared_from_this()));
  }

  // Shutdown began: close the connection if it waits for a request, else
  // close it after the current response.
  void Drain() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->phase_ == Phase::kStreaming) {
        // Ends after what is queued, like a response in flight.
        return self->stream_state_->Close();
      }
      if (self->phase_ != Phase::kWaiting) return;
      beast::error_code ec;
      self->stream_.socket().cancel(ec);
    });
  }

  // Pressure began: if the connection waits for a request, its wait is cut
  // to pressure_timeout (counted from when it began).
  void Tighten() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->phase_ != Phase::kWaiting || self->overflow_) return;
      self->rearm_ = true;
      beast::error_code ec;
      self->stream_.socket().cancel(ec);  // OnFirstBytes waits again.
    });
  }

  // The drain timeout passed: close now, whatever is in flight.
  void ForceClose() {
    net::post(stream_.get_executor(),
              [self = shared_from_this()] { self->CloseNow(); });
  }

 private:
  enum class Phase {
    kWaiting,
    kHandshaking,
    kReading,
    kHandling,
    kWriting,
    kStreaming,
    kLingering,
    kClosed
  };

  // What the access log needs about the request being served.
  struct InFlight {
    bool active = false;
    std::string method = "-";
    std::string path = "-";
    std::string route;
    std::string correlation_id;
    // The authenticated key's id; empty without one.
    std::string actor;
    SteadyClock::time_point start;
    bool head = false;
  };

  // ---- Reading --------------------------------------------------------

  void DoWaitForRequest() {
    if (phase_ == Phase::kClosed) return;
    if (core_->draining.load()) return CloseNow();
    if (buffer_.size() > 0) return DoReadHeader();  // Pipelined request.
    phase_ = Phase::kWaiting;
    wait_started_ = SteadyClock::now();
    DoWait();
  }

  // Waits for a request's first bytes. A new connection gets read_timeout
  // for its first request, a kept-alive one idle_timeout, both cut to
  // pressure_timeout under pressure; counted from wait_started_, so that a
  // wait cut short by Tighten() ends at once when it has lasted long enough.
  void DoWait() {
    absl::Duration allowed = requests_served_ == 0
                                 ? core_->options.read_timeout
                                 : core_->options.idle_timeout;
    if (UnderPressure()) {
      allowed = std::min(allowed, core_->options.pressure_timeout);
    }
    const SteadyClock::time_point deadline = wait_started_ + ToChrono(allowed);
    if (deadline <= SteadyClock::now()) return CloseNow();
    stream_.expires_at(deadline);
    WithStream([this](auto& stream) {
      stream.async_read_some(buffer_.prepare(4096),
                             beast::bind_front_handler(&Session::OnFirstBytes,
                                                       shared_from_this()));
    });
  }

  void OnFirstBytes(beast::error_code ec, std::size_t bytes) {
    if (phase_ == Phase::kClosed) return;
    const bool rearm = std::exchange(rearm_, false);
    if (ec == net::error::operation_aborted && rearm &&
        !core_->draining.load()) {
      return DoWait();  // Cancelled by Tighten().
    }
    if (ec) return CloseNow();  // Idle timeout, EOF, or cancelled by Drain().
    buffer_.commit(bytes);
    if (core_->tls && !tls_) return DoHandshake();
    DoReadHeader();
  }

  // ---- TLS --------------------------------------------------------------

  // The first bytes of a connection to a TLS server are in buffer_: a TLS
  // handshake goes on within the deadline DoWait() set; anything else is
  // answered 400.
  void DoHandshake() {
    if (static_cast<const unsigned char*>(buffer_.data().data())[0] !=
        kTlsHandshakeRecord) {
      return RefusePlainHttp();
    }
    phase_ = Phase::kHandshaking;
    tls_context_ = core_->TlsContext();
    tls_.emplace(stream_, *tls_context_);
    tls_->async_handshake(
        net::ssl::stream_base::server, buffer_.data(),
        beast::bind_front_handler(&Session::OnHandshake, shared_from_this()));
  }

  void OnHandshake(beast::error_code ec, std::size_t used) {
    if (phase_ == Phase::kClosed) return;
    if (ec) {
      // Scanners, clients that distrust the certificate, timeouts: common
      // and harmless.
      Log(LogLevel::kDebug, "http TLS handshake failed",
          {{"error", ec.message()}});
      return CloseNow();
    }
    buffer_.consume(used);
    // Bytes the handshake did not take would be encrypted data read as
    // plain text.
    if (buffer_.size() > 0) return CloseNow();
    if (core_->draining.load()) return CloseNow();
    phase_ = Phase::kWaiting;
    DoWait();  // The first request's deadline still counts from accept.
  }

  void RefusePlainHttp() {
    request_ = InFlight();
    request_.active = true;
    request_.start = SteadyClock::now();
    ++request_seq_;
    Response response = ErrorResponse(400, "invalid_request",
                                      "this port serves HTTPS: use https://");
    response.log_detail = "plain HTTP on the TLS port";
    RespondToBrokenRequest(std::move(response));
  }

  // Calls `f` with the stream the connection speaks: TLS once the handshake
  // began, else the TCP stream. Timeouts are always set on stream_, under
  // both.
  template <typename F>
  void WithStream(F&& f) {
    if (tls_) {
      f(*tls_);
    } else {
      f(stream_);
    }
  }

  bool UnderPressure() const {
    return overflow_ || core_->under_pressure.load();
  }

  void DoReadHeader() {
    phase_ = Phase::kReading;
    request_ = InFlight();
    request_.active = true;
    request_.start = SteadyClock::now();
    ++request_seq_;
    parser_.emplace();
    parser_->header_limit(
        static_cast<std::uint32_t>(core_->options.header_limit));
    parser_->body_limit(core_->options.body_limit);
    // Most often the whole header came with the first bytes: parsed here,
    // without an asynchronous read that would complete at once (through
    // the scheduler).
    parser_->eager(false);
    beast::error_code ec;
    if (ParseBuffered([this] { return parser_->is_header_done(); }, &ec)) {
      return OnReadHeader(ec, 0);
    }
    absl::Duration allowed = core_->options.read_timeout;
    if (UnderPressure()) {
      allowed = std::min(allowed, core_->options.pressure_timeout);
    }
    stream_.expires_after(ToChrono(allowed));
    WithStream([this](auto& stream) {
      bhttp::async_read_header(stream, buffer_, *parser_,
                               beast::bind_front_handler(&Session::OnReadHeader,
                                                         shared_from_this()));
    });
  }

  void OnReadHeader(beast::error_code ec, std::size_t) {
    if (phase_ == Phase::kClosed) return;
    if (ec) return OnReadError(ec);
    const auto& header = parser_->get();
    request_.method = ToString(header.method_string());
    request_.path =
        ToString(header.target().substr(0, header.target().find('?')));
    if (header.version() >= 11 && !parser_->is_done() &&
        beast::iequals(header[bhttp::field::expect], "100-continue")) {
      continue_.emplace(bhttp::status::continue_, header.version());
      WithStream([this](auto& stream) {
        bhttp::async_write(stream, *continue_,
                           beast::bind_front_handler(&Session::OnWriteContinue,
                                                     shared_from_this()));
      });
      return;
    }
    DoReadBody();
  }

  void OnWriteContinue(beast::error_code ec, std::size_t) {
    if (phase_ == Phase::kClosed) return;
    if (ec) return CloseNow();
    DoReadBody();
  }

  // Parses what buffer_ holds, as Beast's read operations do before they
  // read from the socket, until `done()`. True when done or failed (*ec);
  // false when the parser needs bytes that have not arrived, and an
  // asynchronous read goes on from where this left off.
  template <typename Done>
  bool ParseBuffered(Done done, beast::error_code* ec) {
    while (!done()) {
      if (buffer_.size() == 0) return false;
      const std::size_t used = parser_->put(buffer_.data(), *ec);
      buffer_.consume(used);
      if (*ec == bhttp::error::need_more) {
        *ec = {};
        return false;
      }
      if (*ec) return true;
      if (used == 0) return false;
    }
    return true;
  }

  void DoReadBody() {
    // A request without a body, or with all of it in the buffer, is done
    // here (see DoReadHeader()).
    parser_->eager(true);
    beast::error_code ec;
    if (ParseBuffered([this] { return parser_->is_done(); }, &ec)) {
      return OnRead(ec, 0);
    }
    // The body gets what is left of read_timeout, even when pressure cut
    // the header's time.
    stream_.expires_at(request_.start + ToChrono(core_->options.read_timeout));
    WithStream([this](auto& stream) {
      bhttp::async_read(
          stream, buffer_, *parser_,
          beast::bind_front_handler(&Session::OnRead, shared_from_this()));
    });
  }

  void OnRead(beast::error_code ec, std::size_t) {
    if (phase_ == Phase::kClosed) return;
    if (ec) return OnReadError(ec);
    stream_.expires_never();  // A slow handler must not close the stream.
    HandleRequest(parser_->release());
  }

  void OnReadError(beast::error_code ec) {
    if (ec == bhttp::error::body_limit) {
      return RespondToBrokenRequest(
          ErrorResponse(413, "payload_too_large",
                        absl::StrCat("request body exceeds ",
                                     core_->options.body_limit, " bytes")));
    }
    if (ec == bhttp::error::header_limit) {
      return RespondToBrokenRequest(
          ErrorResponse(431, "request_header_fields_too_large",
                        absl::StrCat("request line and headers exceed ",
                                     core_->options.header_limit, " bytes")));
    }
    // Any other parser error means the bytes are not HTTP.
    if (ec.category() ==
            bhttp::make_error_code(bhttp::error::end_of_stream).category() &&
        ec != bhttp::error::end_of_stream &&
        ec != bhttp::error::partial_message) {
      return RespondToBrokenRequest(ErrorResponse(
          400, "invalid_request",
          absl::StrCat("malformed HTTP request: ", ec.message())));
    }
    // The client went away, timed out, or we are closing: nobody to answer.
    if (ec != net::error::operation_aborted) {
      Log(LogLevel::kDebug, "http connection closed while reading",
          {{"error", ec.message()}});
    }
    request_.active = false;
    CloseNow();
  }

  // Answers a request that could not be read completely, then closes.
  void RespondToBrokenRequest(Response response) {
    if (parser_.has_value() && parser_->is_header_done()) {
      request_.correlation_id =
          CorrelationIdFor(ToAbsl(parser_->get()[kCorrelationIdHeader]));
    }
    close_after_response_ = true;
    linger_ = true;
    version_ = 11;
    keep_alive_ = false;
    phase_ = Phase::kHandling;
    if (request_.correlation_id.empty()) request_.correlation_id = NewUuid();
    WriteResponse(std::move(response));
  }

  // ---- Handling -------------------------------------------------------

  static std::string CorrelationIdFor(absl::string_view header) {
    return IsValidCorrelationId(header) ? std::string(header) : NewUuid();
  }

  void HandleRequest(bhttp::request<bhttp::string_body> message) {
    phase_ = Phase::kHandling;
    version_ = message.version();
    keep_alive_ = message.keep_alive();
    request_.head = message.method() == bhttp::verb::head;
    request_.correlation_id =
        CorrelationIdFor(ToAbsl(message[kCorrelationIdHeader]));

    HeaderList headers;
    for (const auto& field : message) {
      headers.emplace_back(ToString(field.name_string()),
                           ToString(field.value()));
    }
    absl::StatusOr<Request> parsed = Request::Create(
        ToString(message.method_string()), ToString(message.target()),
        std::move(headers), std::move(message.body()));
    if (!parsed.ok()) {
      return WriteResponse(
          ErrorResponse(400, "invalid_request", parsed.status().message()));
    }
    Request request = *std::move(parsed);
    request.set_correlation_id(request_.correlation_id);
    request_.path = request.path();

    RouteMatch match =
        core_->router->Match(request.method(), request.raw_path());
    switch (match.result) {
      case RouteMatch::Result::kFound:
        break;
      case RouteMatch::Result::kNotFound:
        return WriteResponse(ErrorResponse(
            404, "not_found", absl::StrCat("no route for ", request.path())));
      case RouteMatch::Result::kMethodNotAllowed: {
        Response response =
            ErrorResponse(405, "method_not_allowed",
                          absl::StrCat(request.method(), " is not allowed on ",
                                       request.path()));
        response.SetHeader("Allow", absl::StrJoin(match.allowed_methods, ", "));
        return WriteResponse(std::move(response));
      }
      case RouteMatch::Result::kBadPath:
        return WriteResponse(
            ErrorResponse(400, "invalid_request",
                          "malformed percent-encoding in request path"));
      case RouteMatch::Result::kOptions: {
        // What the path serves is no secret (the OpenAPI document is
        // open), so this needs no token.
        Response response;
        response.status = 204;
        response.content_type.clear();
        response.SetHeader("Allow", absl::StrJoin(match.allowed_methods, ", "));
        return WriteResponse(std::move(response));
      }
    }
    const Route& route = *match.route;
    request_.route = route.pattern;
    if (overflow_ && !route.options.operations) {
      Response response = Overloaded("too many open connections; retry later");
      response.log_detail = "connection beyond max_connections";
      return WriteResponse(std::move(response));
    }
    request.set_route_pattern(route.pattern);
    request.set_path_params(std::move(match.params));
    if (core_->options.auth.authenticator != nullptr &&
        route.options.access.kind == RouteAccess::Kind::kScope) {
      return Authenticate(route, std::move(request));
    }
    Accept(route, std::move(request));
  }

  // The caller of a route with a scope (framework/http/auth.h): from the
  // authenticator's cache at once, or else on a worker thread and back on
  // this strand.
  void Authenticate(const Route& route, Request request) {
    const absl::Time now = absl::Now();
    const absl::Duration wait = core_->limiter.Blocked(client_address_, now);
    if (wait > absl::ZeroDuration()) {
      return WriteResponse(TooManyFailures(wait));
    }
    const absl::optional<absl::string_view> token = BearerToken(request);
    if (!token.has_value()) return WriteResponse(Unauthenticated());
    if (token->empty()) {
      core_->limiter.RecordFailure(client_address_, now);
      return WriteResponse(Unauthenticated());
    }
    Authenticator* authenticator = core_->options.auth.authenticator;
    absl::optional<absl::StatusOr<PrincipalPtr>> known =
        authenticator->AuthenticateCached(*token);
    if (known.has_value()) {
      return Authorize(route, std::move(request), *std::move(known));
    }
    auto job = [self = shared_from_this(), seq = request_seq_, route = &route,
                token = std::string(*token), authenticator,
                request = std::make_shared<Request>(std::move(request)),
                gate = core_->gate]() mutable {
      absl::StatusOr<PrincipalPtr> who = authenticator->Authenticate(token);
      gate->IfOpen([&] {
        net::post(self->stream_.get_executor(), [self, seq, route,
                                                 request = std::move(request),
                                                 who =
                                                     std::move(who)]() mutable {
          if (self->phase_ != Phase::kHandling || seq != self->request_seq_) {
            return;
          }
          self->Authorize(*route, std::move(*request), std::move(who));
        });
      });
    };
    WorkerPool& pool =
        route.options.operations ? core_->operations_pool : core_->pool;
    if (!pool.TrySubmit(std::move(job))) {
      WriteResponse(Overloaded("too many requests are waiting; retry later"));
    }
  }

  void Authorize(const Route& route, Request request,
                 absl::StatusOr<PrincipalPtr> who) {
    if (!who.ok()) {
      if (who.status().code() != absl::StatusCode::kUnauthenticated) {
        return WriteResponse(ResponseFromStatus(who.status()));
      }
      core_->limiter.RecordFailure(client_address_, absl::Now());
      return WriteResponse(Unauthenticated());
    }
    request_.actor = (*who)->id;
    if (!(*who)->HasScope(route.options.access.scope)) {
      return WriteResponse(Forbidden(route.options.access.scope));
    }
    request.set_principal(*std::move(who));
    Accept(route, std::move(request));
  }

  // The checks that need no handler, then the handler.
  void Accept(const Route& route, Request request) {
    if (route.options.require_json_body && !request.body().empty() &&
        !IsJsonContentType(request.Header("Content-Type").value_or(""))) {
      return WriteResponse(ErrorResponse(
          415, "unsupported_media_type",
          "request body must have Content-Type application/json"));
    }
    Dispatch(route, std::move(request), route.options.operations);
  }

  // Builds the Responder through which the handler answers: it posts the
  // response onto this connection's strand, if the server still runs and
  // the connection is still open and still waits for this request's
  // response (the queue timeout may have answered it).
  Responder MakeResponder() {
    std::weak_ptr<Session> weak = shared_from_this();
    std::shared_ptr<DeliveryGate> gate = core_->gate;
    return Responder([weak = std::move(weak), gate = std::move(gate),
                      seq = request_seq_](Response response) mutable {
      gate->IfOpen([&] {
        std::shared_ptr<Session> self = weak.lock();
        if (self == nullptr) return;
        net::post(self->stream_.get_executor(),
                  [self, seq, response = std::move(response)]() mutable {
                    self->OnResponse(seq, std::move(response));
                  });
      });
    });
  }

  // Handlers are application code: an exception must cost one request,
  // not the process.
  static Response HandlerThrew() {
    Response response = ErrorResponse(500, "internal", "internal error");
    try {
      throw;
    } catch (const std::exception& e) {
      response.log_detail = absl::StrCat("handler threw: ", e.what());
    } catch (...) {
      response.log_detail = "handler threw a non-standard exception";
    }
    return response;
  }

  static void RunHandler(const Route& route, const Request& request,
                         const Responder& responder) {
    try {
      if (route.handler) {
        responder(route.handler(request));
      } else {
        route.async_handler(request, responder);
      }
    } catch (...) {
      responder(HandlerThrew());
    }
  }

  void Dispatch(const Route& route, Request request, bool operations) {
    if (route.options.execution == Execution::kNetworkThread && route.handler) {
      // Already on this connection's strand: the answer is written at
      // once, without a trip through the scheduler (which would wake the
      // other network thread for every request).
      Response response;
      try {
        response = route.handler(request);
      } catch (...) {
        response = HandlerThrew();
      }
      return WriteResponse(std::move(response));
    }
    Responder responder = MakeResponder();
    if (route.options.execution == Execution::kNetworkThread) {
      RunHandler(route, request, responder);
      return;
    }
    const Route* route_ptr = &route;
    auto shared_request = std::make_shared<const Request>(std::move(request));
    auto ticket =
        std::make_shared<std::atomic<QueueState>>(QueueState::kQueued);
    WorkerPool& pool = operations ? core_->operations_pool : core_->pool;
    if (!pool.TrySubmit([route_ptr, shared_request, responder, ticket] {
          QueueState queued = QueueState::kQueued;
          // Abandoned: the client has had its 503 already (the 500 that
          // the dropped responder sends is stale and ignored).
          if (!ticket->compare_exchange_strong(queued, QueueState::kStarted)) {
            return;
          }
          RunHandler(*route_ptr, *shared_request, responder);
        })) {
      responder(Overloaded("too many requests are waiting; retry later"));
      return;
    }
    queue_timer_.expires_after(ToChrono(core_->options.queue_timeout));
    queue_timer_.async_wait([self = shared_from_this(),
                             ticket = std::move(ticket),
                             seq = request_seq_](beast::error_code ec) {
      if (!ec) self->OnQueueTimeout(*ticket, seq);
    });
  }

  // No worker took request `seq` within queue_timeout: unless one has just
  // taken it, answer 503 and make sure its handler never runs.
  void OnQueueTimeout(std::atomic<QueueState>& ticket, uint64_t seq) {
    if (phase_ != Phase::kHandling || seq != request_seq_) return;
    QueueState queued = QueueState::kQueued;
    if (!ticket.compare_exchange_strong(queued, QueueState::kAbandoned)) {
      return;
    }
    Response response = Overloaded("no worker was free in time; retry later");
    response.log_detail = "waited queue_timeout for a worker";
    WriteResponse(std::move(response));
  }

  void OnResponse(uint64_t seq, Response response) {
    // Closed in the meantime, or answered already by the queue timeout.
    if (phase_ != Phase::kHandling || seq != request_seq_) return;
    queue_timer_.cancel();
    WriteResponse(std::move(response));
  }

  // ---- Writing --------------------------------------------------------

  void WriteResponse(Response response) {
    phase_ = Phase::kWriting;
    if (response.status < 200 || response.status > 599) {
      const std::string detail = absl::StrCat(
          "handler returned invalid HTTP status ", response.status);
      response = ErrorResponse(500, "internal", "internal error");
      response.log_detail = detail;
    }
    status_ = response.status;
    log_detail_ = std::move(response.log_detail);

    if (response.stream && response.status == 200 && !request_.head) {
      return StartStream(std::move(response));
    }
    auto message = std::make_unique<bhttp::response<bhttp::string_body>>();
    const bool no_body = response.status == 204 || response.status == 304;
    SetHead(response, no_body, *message);
    const bool keep_alive =
        keep_alive_ && !close_after_response_ && !core_->draining.load();
    close_after_response_ = !keep_alive;
    message->keep_alive(keep_alive);
    if (!no_body) {
      message->body() = std::move(response.body);
      message->prepare_payload();
      // A HEAD response announces the length but carries no body.
      if (request_.head) message->body().clear();
    }
    response_ = std::move(message);

    stream_.expires_after(ToChrono(core_->options.write_timeout));
    WithStream([this](auto& stream) {
      bhttp::async_write(
          stream, *response_,
          beast::bind_front_handler(&Session::OnWrite, shared_from_this()));
    });
  }

  // Status line and headers of `response` into `message`.
  template <typename Message>
  void SetHead(const Response& response, bool no_body, Message& message) {
    message.version(version_);
    message.result(static_cast<unsigned>(response.status));
    if (!response.content_type.empty() && !no_body) {
      message.set(bhttp::field::content_type, response.content_type);
    }
    for (const auto& header : response.headers) {
      if (IsManagedHeader(header.first)) continue;
      if (!IsSafeHeader(header.first, header.second)) {
        absl::StrAppend(&log_detail_, log_detail_.empty() ? "" : "; ",
                        "dropped unsafe response header ", header.first);
        continue;
      }
      if (absl::EqualsIgnoreCase(header.first, "Content-Type")) {
        message.set(bhttp::field::content_type, header.second);
      } else {
        message.insert(header.first, header.second);
      }
    }
    message.set(kCorrelationIdHeader, request_.correlation_id);
  }

  // ---- Streaming ------------------------------------------------------
  //
  // A streamed response (Response::stream): the head, then whatever the
  // producer queues, as HTTP/1.1 chunks (raw bytes for HTTP/1.0, ended by
  // the close), until the producer closes, the client goes away or stops
  // reading for write_timeout, or shutdown drains the connection. The
  // connection then closes. While streaming, the socket is watched for
  // readability: a client of a stream sends nothing more, so anything (its
  // FIN above all) ends the stream.

  void StartStream(Response response) {
    close_after_response_ = true;
    chunked_ = version_ >= 11;
    stream_start_ = std::move(response.stream);
    stream_head_ = std::make_unique<bhttp::response<bhttp::empty_body>>();
    SetHead(response, /*no_body=*/false, *stream_head_);
    stream_head_->keep_alive(false);
    if (chunked_) stream_head_->chunked(true);
    stream_serializer_.emplace(*stream_head_);
    ArmStreamTimer();
    WithStream([this](auto& stream) {
      bhttp::async_write_header(
          stream, *stream_serializer_,
          beast::bind_front_handler(&Session::OnStreamHead,
                                    shared_from_this()));
    });
  }

  // Closes the connection when one write of the stream takes longer than
  // write_timeout (a client that stopped reading).
  void ArmStreamTimer() {
    stream_timer_.expires_after(ToChrono(core_->options.write_timeout));
    stream_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->phase_ == Phase::kClosed) return;
      self->log_detail_ = "the client stopped reading the stream";
      self->FinishRequest("timed out");
      self->CloseNow();
    });
  }

  void OnStreamHead(beast::error_code ec, std::size_t) {
    if (phase_ == Phase::kClosed) return;
    stream_timer_.cancel();
    stream_serializer_.reset();
    stream_head_.reset();
    if (ec) {
      FinishRequest(ec.message());
      return CloseNow();
    }
    phase_ = Phase::kStreaming;
    if (core_->options.stream_send_buffer > 0) {
      beast::error_code ignored;
      stream_.socket().set_option(
          net::socket_base::send_buffer_size(core_->options.stream_send_buffer),
          ignored);
    }
    std::weak_ptr<Session> weak = shared_from_this();
    stream_state_ = std::make_shared<StreamState>([weak = std::move(weak),
                                                   gate = core_->gate] {
      gate->IfOpen([&] {
        std::shared_ptr<Session> self = weak.lock();
        if (self == nullptr) return;
        net::post(self->stream_.get_executor(), [self] { self->PumpStream(); });
      });
    });
    WatchStreamReadable();
    auto start = std::exchange(stream_start_, nullptr);
    try {
      start(stream_state_);
    } catch (const std::exception& e) {
      log_detail_ = absl::StrCat("stream producer threw: ", e.what());
      stream_state_->Close();
    }
    if (core_->draining.load()) stream_state_->Close();
  }

  void WatchStreamReadable() {
    stream_.socket().async_wait(
        tcp::socket::wait_read,
        beast::bind_front_handler(&Session::OnStreamReadable,
                                  shared_from_this()));
  }

  void OnStreamReadable(beast::error_code ec) {
    if (phase_ != Phase::kStreaming || ec == net::error::operation_aborted) {
      return;
    }
    if (ec) {
      log_detail_ =
          absl::StrCat("the client's connection failed: ", ec.message());
    } else {
      // Readiness is a hint: look before ending the stream, and wait again
      // when there is nothing to read after all.
      char byte;
      const ssize_t n = ::recv(stream_.socket().native_handle(), &byte, 1,
                               MSG_PEEK | MSG_DONTWAIT);
      if (n < 0 &&
          (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return WatchStreamReadable();
      }
      log_detail_ = n > 0 ? "the client sent data on the stream"
                          : "the client closed the stream";
    }
    FinishRequest("");
    CloseNow();
  }

  // Writes what the producer queued; ends the stream once it closed and
  // everything queued is written.
  void PumpStream() {
    if (phase_ != Phase::kStreaming || stream_writing_) return;
    bool closing = false;
    stream_out_ = stream_state_->Take(&closing);
    if (stream_out_.empty()) {
      if (closing) EndStream();
      return;
    }
    stream_writing_ = true;
    ArmStreamTimer();
    auto on_write =
        beast::bind_front_handler(&Session::OnStreamWrite, shared_from_this());
    WithStream([&](auto& stream) {
      if (chunked_) {
        net::async_write(stream, bhttp::make_chunk(net::buffer(stream_out_)),
                         std::move(on_write));
      } else {
        net::async_write(stream, net::buffer(stream_out_), std::move(on_write));
      }
    });
  }

  void OnStreamWrite(beast::error_code ec, std::size_t) {
    stream_writing_ = false;
    if (phase_ == Phase::kClosed) return;
    stream_timer_.cancel();
    if (ec) {
      FinishRequest(ec.message());
      return CloseNow();
    }
    const size_t written = stream_out_.size();
    stream_out_.clear();
    stream_state_->Written(written);
    PumpStream();
  }

  // The producer closed: the last chunk, then close.
  void EndStream() {
    phase_ = Phase::kWriting;
    stream_state_->End();
    beast::error_code ignored;
    stream_.socket().cancel(ignored);  // The readability watch.
    if (!chunked_) {
      FinishRequest("");
      return DoGracefulClose();
    }
    ArmStreamTimer();
    WithStream([this](auto& stream) {
      net::async_write(
          stream, bhttp::make_chunk_last(),
          [self = shared_from_this()](beast::error_code ec, std::size_t) {
            if (self->phase_ == Phase::kClosed) return;
            self->stream_timer_.cancel();
            self->FinishRequest(ec ? ec.message() : "");
            if (ec) return self->CloseNow();
            self->DoGracefulClose();
          });
    });
  }

  void OnWrite(beast::error_code ec, std::size_t) {
    if (phase_ == Phase::kClosed) return;
    response_.reset();
    FinishRequest(ec ? ec.message() : std::string());
    if (ec) return CloseNow();
    ++requests_served_;
    if (close_after_response_) return DoGracefulClose();
    DoWaitForRequest();
  }

  // Writes the access-log line and calls on_request_done, once per request.
  void FinishRequest(const std::string& write_error) {
    if (!request_.active) return;
    request_.active = false;
    const auto elapsed = SteadyClock::now() - request_.start;
    const absl::Duration duration = absl::FromChrono(elapsed);
    const double duration_ms =
        std::round(absl::ToDoubleMilliseconds(duration) * 1000) / 1000;
    const absl::string_view route =
        request_.route.empty() ? kUnmatched : absl::string_view(request_.route);
    const LogLevel level = status_ >= 500 || !write_error.empty()
                               ? LogLevel::kWarn
                               : LogLevel::kInfo;
    if (LogEnabled(level)) {
      std::string detail = log_detail_;
      if (!write_error.empty()) {
        absl::StrAppend(&detail, detail.empty() ? "" : "; ",
                        "write failed: ", write_error);
      }
      const absl::string_view actor =
          request_.actor.empty() ? "-" : absl::string_view(request_.actor);
      if (detail.empty()) {
        Log(level, "http request",
            {{"method", request_.method},
             {"path", request_.path},
             {"status", status_},
             {"duration_ms", duration_ms},
             {"correlation_id", request_.correlation_id},
             {"route", route},
             {"actor", actor}});
      } else {
        Log(level, "http request",
            {{"method", request_.method},
             {"path", request_.path},
             {"status", status_},
             {"duration_ms", duration_ms},
             {"correlation_id", request_.correlation_id},
             {"route", route},
             {"actor", actor},
             {"error", detail}});
      }
    }
    if (core_->options.on_request_done) {
      RequestInfo info;
      info.method = request_.method;
      info.route = route;
      info.status = status_;
      info.duration = duration;
      core_->options.on_request_done(info);
    }
  }

  // ---- Closing --------------------------------------------------------

  void DoGracefulClose() {
    if (tls_ && !tls_closed_) return DoTlsClose();
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (!linger_ || ec) return CloseNow();
    // Read and discard what the client still sends until it closes too.
    phase_ = Phase::kLingering;
    stream_.expires_after(kLingerTime);
    DoLinger();
  }

  void DoLinger() {
    stream_.async_read_some(
        net::buffer(linger_buffer_),
        beast::bind_front_handler(&Session::OnLinger, shared_from_this()));
  }

  void OnLinger(beast::error_code ec, std::size_t) {
    if (phase_ == Phase::kClosed) return;
    if (ec) return CloseNow();
    DoLinger();
  }

  // Writes close_notify, then closes as a plain connection does. Like
  // nginx, it does not wait for the client's close_notify (RFC 8446 6.1
  // allows that): marking it received makes the shutdown complete once ours
  // is written.
  void DoTlsClose() {
    phase_ = Phase::kLingering;
    tls_closed_ = true;
    SSL_set_shutdown(tls_->native_handle(), SSL_RECEIVED_SHUTDOWN);
    stream_.expires_after(kTlsCloseTime);
    tls_->async_shutdown(
        beast::bind_front_handler(&Session::OnTlsClose, shared_from_this()));
  }

  void OnTlsClose(beast::error_code ec) {
    if (phase_ == Phase::kClosed) return;
    if (ec) return CloseNow();
    DoGracefulClose();
  }

  void CloseNow() {
    if (phase_ == Phase::kClosed) return;
    if (request_.active && phase_ != Phase::kReading) {
      // Shutdown cut the request off before its response was written.
      Log(LogLevel::kWarn, "http request",
          {{"method", request_.method},
           {"path", request_.path},
           {"status", 0},
           {"correlation_id", request_.correlation_id},
           {"route", request_.route.empty()
                         ? kUnmatched
                         : absl::string_view(request_.route)},
           {"error", "connection closed before the response was written"}});
      request_.active = false;
    }
    phase_ = Phase::kClosed;
    queue_timer_.cancel();
    stream_timer_.cancel();
    if (stream_state_ != nullptr) stream_state_->End();
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
    core_->Unregister(this);
  }

  beast::tcp_stream stream_;
  // With TLS, from the handshake on: the context the connection started
  // with (ReloadTls() does not change it) and the TLS layer over stream_.
  std::shared_ptr<net::ssl::context> tls_context_;
  absl::optional<beast::ssl_stream<beast::tcp_stream&>> tls_;
  // close_notify was written: what follows is plain TCP.
  bool tls_closed_ = false;
  // Bounds the wait of a queued request for a worker.
  net::steady_timer queue_timer_;
  // Bounds each write of a streamed response.
  net::steady_timer stream_timer_;
  // Owned by the server, which outlives every session it runs.
  Core* const core_;
  // The peer's IP address, for the failed-authentication limit.
  std::string client_address_;
  // Beyond max_connections: answered once (operations routes served,
  // others 503), always under pressure. Set before the first handler runs.
  bool overflow_ = false;

  beast::flat_buffer buffer_;
  absl::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  absl::optional<bhttp::response<bhttp::empty_body>> continue_;
  std::unique_ptr<bhttp::response<bhttp::string_body>> response_;
  // A streamed response: its head while that is written, the producer's
  // start until then, its writer, and the bytes being written.
  std::unique_ptr<bhttp::response<bhttp::empty_body>> stream_head_;
  absl::optional<bhttp::response_serializer<bhttp::empty_body>>
      stream_serializer_;
  std::function<void(std::shared_ptr<StreamWriter>)> stream_start_;
  std::shared_ptr<StreamState> stream_state_;
  std::string stream_out_;
  bool stream_writing_ = false;
  bool chunked_ = false;
  char linger_buffer_[4096];

  Phase phase_ = Phase::kWaiting;
  InFlight request_;
  int status_ = 0;
  std::string log_detail_;
  unsigned version_ = 11;
  bool keep_alive_ = false;
  bool close_after_response_ = false;
  bool linger_ = false;
  int64_t requests_served_ = 0;
  // Counts requests; a Responder or queue timer of an earlier one is stale.
  uint64_t request_seq_ = 0;
  // When the current wait for a request began.
  SteadyClock::time_point wait_started_;
  // Tighten() cancelled the wait: wait again with the shorter deadline.
  bool rearm_ = false;
};

// Accepts connections and starts a session for each.
class Listener : public std::enable_shared_from_this<Listener> {
 public:
  Listener(net::io_context& ioc, tcp::acceptor acceptor, Core* core)
      : ioc_(ioc),
        acceptor_(std::move(acceptor)),
        retry_timer_(acceptor_.get_executor()),
        core_(core) {}

  void Run() {
    net::dispatch(
        acceptor_.get_executor(),
        beast::bind_front_handler(&Listener::DoAccept, shared_from_this()));
  }

  void Stop() {
    net::post(acceptor_.get_executor(), [self = shared_from_this()] {
      beast::error_code ec;
      self->acceptor_.close(ec);
      self->retry_timer_.cancel();
    });
  }

 private:
  void DoAccept() {
    if (!acceptor_.is_open()) return;
    // Each connection gets its own strand.
    acceptor_.async_accept(
        net::make_strand(ioc_),
        beast::bind_front_handler(&Listener::OnAccept, shared_from_this()));
  }

  void OnAccept(beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      // Typically out of file descriptors: pause instead of spinning.
      Log(LogLevel::kWarn, "http accept failed", {{"error", ec.message()}});
      retry_timer_.expires_after(std::chrono::milliseconds(100));
      retry_timer_.async_wait(
          [self = shared_from_this()](beast::error_code wait_ec) {
            if (!wait_ec) self->DoAccept();
          });
      return;
    }
    beast::error_code option_ec;
    socket.set_option(tcp::no_delay(true), option_ec);
    auto session = std::make_shared<Session>(std::move(socket), core_);
    std::vector<std::shared_ptr<Session>> already_open;
    bool pressure_began = false;
    const Admission admission =
        core_->Register(session, &already_open, &pressure_began);
    if (pressure_began) {
      Log(LogLevel::kWarn,
          "http connections under pressure: waits cut to pressure_timeout",
          {{"connections", static_cast<int64_t>(already_open.size() + 1)},
           {"max_connections", core_->options.max_connections}});
    }
    for (const auto& open : already_open) open->Tighten();
    if (admission != Admission::kRefused) {
      session->Run(admission);
    } else {
      // Beyond max_connections and overflow_connections (or shutting
      // down): the session's destructor closes the socket.
      Log(LogLevel::kWarn, "http connection refused",
          {{"reason", "too many open connections"},
           {"max_connections", core_->options.max_connections},
           {"overflow_connections", core_->options.overflow_connections}});
    }
    DoAccept();
  }

  net::io_context& ioc_;
  tcp::acceptor acceptor_;
  net::steady_timer retry_timer_;
  Core* const core_;
};

absl::StatusOr<tcp::endpoint> ParseListenAddress(absl::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address \"", address, "\" must be host:port"));
  }
  absl::string_view host = address.substr(0, colon);
  const absl::string_view port_text = address.substr(colon + 1);
  int port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address \"", address, "\" has a bad port"));
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  beast::error_code ec;
  const net::ip::address ip = net::ip::make_address(std::string(host), ec);
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen address \"", address, "\" needs a numeric IP address"));
  }
  return tcp::endpoint(ip, static_cast<unsigned short>(port));
}

}  // namespace

absl::StatusOr<bool> IsLoopbackListenAddress(absl::string_view address) {
  absl::StatusOr<tcp::endpoint> endpoint = ParseListenAddress(address);
  if (!endpoint.ok()) return endpoint.status();
  return endpoint->address().is_loopback();
}

namespace {

absl::Status ValidateOptions(const ServerOptions& options) {
  if (options.network_threads < 1 || options.worker_threads < 1) {
    return absl::InvalidArgumentError(
        "network_threads and worker_threads must be at least 1");
  }
  if (options.max_connections < 1 || options.body_limit == 0 ||
      options.header_limit == 0 || options.max_queued_requests == 0 ||
      options.operations_threads < 1) {
    return absl::InvalidArgumentError(
        "max_connections, body_limit, header_limit, max_queued_requests and "
        "operations_threads must be positive");
  }
  if (options.overflow_connections < 0) {
    return absl::InvalidArgumentError("overflow_connections must be >= 0");
  }
  if (options.max_queued_requests >=
      static_cast<size_t>(options.max_connections)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_queued_requests (", options.max_queued_requests,
        ") must be less than max_connections (", options.max_connections,
        "): a connection has at most one request in flight, so a longer "
        "queue would never fill"));
  }
  if (options.auth.authenticator != nullptr &&
      (options.auth.max_failures < 1 ||
       options.auth.failure_window <= absl::ZeroDuration())) {
    return absl::InvalidArgumentError(
        "auth.max_failures and auth.failure_window must be positive");
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "tls_cert_file and tls_key_file must be given together (or neither, "
        "for plain HTTP)");
  }
  if (options.header_limit > UINT32_MAX) {
    return absl::InvalidArgumentError("header_limit must fit in 32 bits");
  }
  if (options.read_timeout <= absl::ZeroDuration() ||
      options.idle_timeout <= absl::ZeroDuration() ||
      options.write_timeout <= absl::ZeroDuration() ||
      options.queue_timeout <= absl::ZeroDuration() ||
      options.pressure_timeout <= absl::ZeroDuration() ||
      options.drain_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeouts must be positive");
  }
  return absl::OkStatus();
}

}  // namespace

class Server::Impl {
 public:
  int OpenConnections() {
    absl::MutexLock lock(&core_.mu);
    return static_cast<int>(core_.sessions.size());
  }

  Impl(ServerOptions options, const Router* router,
       std::shared_ptr<net::ssl::context> tls_context)
      : core_(std::move(options), router, std::move(tls_context)),
        ioc_(core_.options.network_threads),
        work_guard_(net::make_work_guard(ioc_)) {}

  ~Impl() {
    // Stop() normally ran; this covers a server that was never started.
    core_.gate->Close();
  }

  absl::StatusOr<int> Bind() {
    absl::StatusOr<tcp::endpoint> endpoint =
        ParseListenAddress(core_.options.listen_address);
    if (!endpoint.ok()) return endpoint.status();
    tcp::acceptor acceptor(net::make_strand(ioc_));
    beast::error_code ec;
    const auto fail = [&](absl::string_view what) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", core_.options.listen_address, ": ",
                       what, ": ", ec.message()));
    };
    acceptor.open(endpoint->protocol(), ec);
    if (ec) return fail("open");
    acceptor.set_option(net::socket_base::reuse_address(true), ec);
    if (ec) return fail("set_option");
    acceptor.bind(*endpoint, ec);
    if (ec) return fail("bind");
    acceptor.listen(net::socket_base::max_listen_connections, ec);
    if (ec) return fail("listen");
    const int port = acceptor.local_endpoint(ec).port();
    if (ec) return fail("local_endpoint");
    listener_ = std::make_shared<Listener>(ioc_, std::move(acceptor), &core_);
    return port;
  }

  void Start() {
    listener_->Run();
    threads_.reserve(static_cast<size_t>(core_.options.network_threads));
    for (int i = 0; i < core_.options.network_threads; ++i) {
      threads_.emplace_back([this] { RunNetworkThread(); });
    }
    Log(LogLevel::kInfo, "http server listening",
        {{"address", core_.options.listen_address},
         {"network_threads", core_.options.network_threads},
         {"worker_threads", core_.options.worker_threads},
         {"max_connections", core_.options.max_connections},
         {"max_queued_requests",
          static_cast<int64_t>(core_.options.max_queued_requests)},
         {"tls", core_.tls}});
  }

  // Makes the next SIGINT or SIGTERM call RequestStop(), and with TLS each
  // SIGHUP call ReloadTls().
  void InstallSignalHandler() {
    signals_ = std::make_unique<net::signal_set>(ioc_, SIGINT, SIGTERM);
    signals_->async_wait([this](beast::error_code ec, int signal_number) {
      if (ec) return;
      Log(LogLevel::kInfo, "http server stopping on signal",
          {{"signal", signal_number}});
      RequestStop();
    });
    if (core_.tls) {
      reload_signal_ = std::make_unique<net::signal_set>(ioc_, SIGHUP);
      WaitForReloadSignal();
    }
  }

  absl::Status ReloadTls() {
    if (!core_.tls) {
      return absl::FailedPreconditionError(
          "the server has no TLS: tls_cert_file and tls_key_file are empty");
    }
    absl::StatusOr<std::shared_ptr<net::ssl::context>> context =
        http_internal::LoadServerTlsContext(core_.options.tls_cert_file,
                                            core_.options.tls_key_file);
    if (!context.ok()) {
      Log(LogLevel::kWarn,
          "http TLS reload failed: the current certificate stays in use",
          {{"error", context.status().message()}});
      return context.status();
    }
    core_.SetTlsContext(*std::move(context));
    Log(LogLevel::kInfo, "http TLS certificate reloaded",
        {{"cert_file", core_.options.tls_cert_file}});
    return absl::OkStatus();
  }

  void RequestStop() {
    absl::MutexLock lock(&stop_mu_);
    stop_requested_ = true;
  }

  void WaitForStopRequest() {
    absl::MutexLock lock(&stop_mu_);
    stop_mu_.Await(absl::Condition(&stop_requested_));
  }

  // The graceful shutdown described in server.h.
  void Stop(bool started) {
    if (!started) {
      if (core_.options.on_shutdown) core_.options.on_shutdown();
      core_.gate->Close();
      core_.pool.Stop();
      core_.operations_pool.Stop();
      return;
    }
    const auto begin = SteadyClock::now();
    core_.draining.store(true);
    listener_->Stop();
    for (const auto& session : core_.Snapshot()) session->Drain();
    // Parked requests are answered now rather than at the drain timeout.
    if (core_.options.on_shutdown) core_.options.on_shutdown();
    const bool drained = WaitForNoSessions(core_.options.drain_timeout);
    if (!drained) {
      Log(LogLevel::kWarn, "http drain timeout: closing remaining connections",
          {{"connections", static_cast<int64_t>(core_.Snapshot().size())}});
      for (const auto& session : core_.Snapshot()) session->ForceClose();
      // Closing takes one trip through each strand; a strand stuck in an
      // inline handler is not waited for beyond this.
      WaitForNoSessions(absl::Seconds(1));
    }
    core_.gate->Close();
    work_guard_.reset();
    ioc_.stop();
    for (std::thread& thread : threads_) thread.join();
    threads_.clear();
    signals_.reset();
    reload_signal_.reset();
    // Waits for handlers still running; queued ones are dropped.
    core_.pool.Stop();
    core_.operations_pool.Stop();
    {
      // Sessions left (their strands were stuck) die here; the io_context
      // destroys whatever handlers are still queued in it.
      std::vector<std::shared_ptr<Session>> left;
      absl::MutexLock lock(&core_.mu);
      for (auto& entry : core_.sessions)
        left.push_back(std::move(entry.second.session));
      core_.sessions.clear();
    }
    Log(LogLevel::kInfo, "http server stopped",
        {{"shutdown_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                             SteadyClock::now() - begin)
                             .count()}});
  }

 private:
  void RunNetworkThread() {
    for (;;) {
      try {
        ioc_.run();
        return;
      } catch (const std::exception& e) {
        Log(LogLevel::kError, "http network thread caught an exception",
            {{"error", e.what()}});
      }
    }
  }

  void WaitForReloadSignal() {
    reload_signal_->async_wait([this](beast::error_code ec, int) {
      if (ec) return;  // Stop() removed the handler.
      Log(LogLevel::kInfo, "http server reloading TLS files on SIGHUP");
      // Reading two small files on a network thread, once per signal, is
      // cheap. The outcome is logged by ReloadTls().
      ReloadTls().IgnoreError();
      WaitForReloadSignal();
    });
  }

  bool WaitForNoSessions(absl::Duration timeout) {
    absl::MutexLock lock(&core_.mu);
    const auto empty = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(core_.mu) {
      return core_.sessions.empty();
    };
    return core_.mu.AwaitWithTimeout(absl::Condition(&empty), timeout);
  }

  // Declared before the io_context, so that it outlives every session and
  // handler the io_context still holds when destroyed.
  Core core_;
  net::io_context ioc_;
  net::executor_work_guard<net::io_context::executor_type> work_guard_;
  std::shared_ptr<Listener> listener_;
  std::unique_ptr<net::signal_set> signals_;
  // SIGHUP during Run(), with TLS.
  std::unique_ptr<net::signal_set> reload_signal_;
  std::vector<std::thread> threads_;

  absl::Mutex stop_mu_;
  bool stop_requested_ ABSL_GUARDED_BY(stop_mu_) = false;
};

absl::StatusOr<std::unique_ptr<Server>> Server::Create(ServerOptions options,
                                                       const Router* router) {
  if (router == nullptr) {
    return absl::InvalidArgumentError("router must not be null");
  }
  if (!router->status().ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("router has a bad route: ", router->status().message()));
  }
  absl::Status valid = ValidateOptions(options);
  if (!valid.ok()) return valid;
  if (options.auth.authenticator != nullptr) {
    for (const Route* route : router->RouteList()) {
      if (route->options.access.kind == RouteAccess::Kind::kUndeclared) {
        return absl::InvalidArgumentError(absl::StrCat(
            "route ", route->method, " ", route->pattern,
            " declares no access (RouteOptions::access: RouteAccess::Open() "
            "or RouteAccess::Scope(...)); with authentication on, every "
            "route must"));
      }
    }
  }
  std::shared_ptr<net::ssl::context> tls_context;
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::shared_ptr<net::ssl::context>> loaded =
        http_internal::LoadServerTlsContext(options.tls_cert_file,
                                            options.tls_key_file);
    if (!loaded.ok()) return loaded.status();
    tls_context = *std::move(loaded);
  }
  auto impl = std::make_unique<Impl>(std::move(options), router,
                                     std::move(tls_context));
  absl::StatusOr<int> port = impl->Bind();
  if (!port.ok()) return port.status();
  return std::unique_ptr<Server>(new Server(std::move(impl), *port));
}

Server::Server(std::unique_ptr<Impl> impl, int port)
    : impl_(std::move(impl)), port_(port) {}

Server::~Server() { Shutdown(); }

int Server::open_connections() const { return impl_->OpenConnections(); }

absl::Status Server::Start() {
  absl::MutexLock lock(&mu_);
  if (state_ != State::kCreated) {
    return absl::FailedPreconditionError("server already started or stopped");
  }
  impl_->Start();
  state_ = State::kRunning;
  return absl::OkStatus();
}

absl::Status Server::Run() {
  {
    absl::MutexLock lock(&mu_);
    if (state_ == State::kStopping || state_ == State::kStopped) {
      return absl::FailedPreconditionError("server already stopped");
    }
    impl_->InstallSignalHandler();
    if (state_ == State::kCreated) {
      impl_->Start();
      state_ = State::kRunning;
    }
  }
  impl_->WaitForStopRequest();
  Shutdown();
  return absl::OkStatus();
}

absl::Status Server::ReloadTls() { return impl_->ReloadTls(); }

void Server::Shutdown() {
  bool started = false;
  {
    absl::MutexLock lock(&mu_);
    switch (state_) {
      case State::kStopped:
        return;
      case State::kStopping: {
        const auto stopped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return state_ == State::kStopped;
        };
        mu_.Await(absl::Condition(&stopped));
        return;
      }
      case State::kCreated:
        break;
      case State::kRunning:
        started = true;
        break;
    }
    state_ = State::kStopping;
  }
  impl_->RequestStop();  // Wakes Run(), which then waits here for kStopped.
  impl_->Stop(started);
  absl::MutexLock lock(&mu_);
  state_ = State::kStopped;
}

}  // namespace http
}  // namespace cqrs
