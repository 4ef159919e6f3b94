#include "framework/http/client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <curl/curl.h>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"

namespace cqrs {
namespace http {
namespace {

using Failure = ClientResponse::Failure;

constexpr int kPollMillis = 1000;

// One request on its way, owned by Impl::active_. libcurl keeps pointers
// to its members (the body, the error buffer), so it never moves.
struct Transfer {
  Transfer() = default;
  Transfer(const Transfer&) = delete;
  Transfer& operator=(const Transfer&) = delete;
  ~Transfer() {
    if (easy != nullptr) curl_easy_cleanup(easy);
    curl_slist_free_all(headers);
  }

  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  ClientRequest request;
  std::function<void(ClientResponse)> done;
  absl::Time started;
  // started + request.timeout. libcurl's own timeout only counts from when
  // it begins to connect, not while the request waits for a connection.
  absl::Time deadline;
  // Not owned; the client's options outlive every transfer.
  const HttpClientOptions* options = nullptr;

  // Filled while the transfer runs.
  std::string body;
  std::optional<absl::Duration> retry_after;
  std::string blocked_address;  // the last address the policy refused
  bool connect_attempted = false;
  char error[CURL_ERROR_SIZE] = {};
};

ClientResponse Failed(Failure failure, std::string error) {
  ClientResponse response;
  response.failure = failure;
  response.error = std::move(error);
  return response;
}

ClientResponse Stopped() { return Failed(Failure::kOther, "client stopped"); }

// Retry-After: delta-seconds or an HTTP-date (RFC 9110 10.2.3).
std::optional<absl::Duration> ParseRetryAfter(absl::string_view value) {
  value = absl::StripAsciiWhitespace(value);
  if (value.empty()) return std::nullopt;
  if (std::all_of(value.begin(), value.end(), absl::ascii_isdigit)) {
    int64_t seconds = 0;
    if (!absl::SimpleAtoi(value, &seconds)) return std::nullopt;
    return absl::Seconds(seconds);
  }
  // curl_getdate() reads the three date formats HTTP allows.
  const std::string date(value);
  const time_t when = curl_getdate(date.c_str(), nullptr);
  if (when == -1) return std::nullopt;
  return std::max(absl::ZeroDuration(), absl::FromTimeT(when) - absl::Now());
}

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  const size_t length = size * count;
  const absl::string_view line(data, length);
  // A new response (after a 1xx) starts over.
  if (absl::StartsWith(line, "HTTP/")) {
    transfer->retry_after.reset();
    return length;
  }
  const size_t colon = line.find(':');
  if (colon != absl::string_view::npos &&
      absl::EqualsIgnoreCase(line.substr(0, colon), "retry-after")) {
    transfer->retry_after = ParseRetryAfter(line.substr(colon + 1));
  }
  return length;
}

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  const size_t length = size * count;
  const size_t limit = transfer->options->max_response_body;
  if (transfer->body.size() < limit) {
    transfer->body.append(data,
                          std::min(length, limit - transfer->body.size()));
  }
  return length;  // The rest is read and dropped.
}

std::string FormatAddress(const sockaddr* address) {
  char text[INET6_ADDRSTRLEN] = {};
  const void* bytes = nullptr;
  if (address->sa_family == AF_INET) {
    bytes = &reinterpret_cast<const sockaddr_in*>(address)->sin_addr;
  } else if (address->sa_family == AF_INET6) {
    bytes = &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr;
  }
  if (bytes == nullptr ||
      ::inet_ntop(address->sa_family, bytes, text, sizeof(text)) == nullptr) {
    return absl::StrCat("(address of family ", address->sa_family, ")");
  }
  return text;
}

// Every connection libcurl makes goes through here: the address it is
// about to connect to is the one checked, whatever DNS said earlier.
curl_socket_t OnOpenSocket(void* user, curlsocktype purpose,
                           curl_sockaddr* address) {
  auto* transfer = static_cast<Transfer*>(user);
  if (purpose != CURLSOCKTYPE_IPCXN) return CURL_SOCKET_BAD;
  if (!transfer->options->address_policy.Permits(&address->addr)) {
    transfer->blocked_address = FormatAddress(&address->addr);
    return CURL_SOCKET_BAD;  // libcurl tries the next address, if any.
  }
  transfer->connect_attempted = true;
  // Close-on-exec: the process spawns children (the embedded PostgreSQL).
  return ::socket(address->family, address->socktype | SOCK_CLOEXEC,
                  address->protocol);
}

bool IsToken(absl::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (!absl::ascii_isalnum(c) && !absl::StrContains("!#$%&'*+-.^_`|~", c)) {
      return false;
    }
  }
  return true;
}

bool IsHeaderValue(absl::string_view text) {
  return text.find_first_of(absl::string_view("\r\n\0", 3)) ==
         absl::string_view::npos;
}

bool HasHeader(const ClientRequest& request, absl::string_view name) {
  return std::any_of(request.headers.begin(), request.headers.end(),
                     [name](const auto& header) {
                       return absl::EqualsIgnoreCase(header.first, name);
                     });
}

Failure FailureOf(CURLcode code) {
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
      return Failure::kTimeout;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
      return Failure::kConnect;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
      return Failure::kTls;
    default:
      return Failure::kOther;
  }
}

}  // namespace

// Everything that touches libcurl. Only the client's thread calls it, but
// for Wakeup().
class HttpClient::Impl {
 public:
  Impl(HttpClientOptions options, CURLM* multi)
      : options_(std::move(options)), multi_(multi) {}
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    for (auto& [easy, transfer] : active_) {
      curl_multi_remove_handle(multi_, easy);
    }
    active_.clear();
    curl_multi_cleanup(multi_);
  }

  // Hands `queued` to libcurl. Returns its response at once when it cannot
  // start (its `done` is then still in `queued`).
  std::optional<ClientResponse> Start(Queued& queued);

  // Moves the transfers on, and returns the finished ones (those past their
  // deadline included) with their callbacks.
  std::vector<std::pair<std::function<void(ClientResponse)>, ClientResponse>>
  Perform();

  // Returns the callbacks of every transfer in flight, after dropping them.
  std::vector<std::function<void(ClientResponse)>> Abandon();

  // Waits until a socket is ready, libcurl's next timeout, the next
  // deadline, or Wakeup().
  void Poll();

  // Thread-safe.
  void Wakeup() { curl_multi_wakeup(multi_); }

 private:
  ClientResponse Result(Transfer& transfer, CURLcode code);

  // Constant after construction.
  const HttpClientOptions options_;
  CURLM* const multi_;

  absl::flat_hash_map<CURL*, std::unique_ptr<Transfer>> active_;
  // The deadlines of active_, soonest first.
  std::set<std::pair<absl::Time, CURL*>> deadlines_;
};

std::optional<ClientResponse> HttpClient::Impl::Start(Queued& queued) {
  const ClientRequest& request = queued.request;
  if (!IsToken(request.method)) {
    return Failed(Failure::kOther, "invalid request method");
  }
  for (const auto& [name, value] : request.headers) {
    if (!IsToken(name) || !IsHeaderValue(value)) {
      return Failed(Failure::kOther,
                    absl::StrCat("invalid request header \"",
                                 absl::CHexEscape(name), "\""));
    }
  }
  auto transfer = std::make_unique<Transfer>();
  transfer->easy = curl_easy_init();
  if (transfer->easy == nullptr) {
    return Failed(Failure::kOther, "curl_easy_init failed");
  }
  transfer->request = std::move(queued.request);
  transfer->options = &options_;
  transfer->started = absl::Now();
  transfer->deadline = transfer->started + transfer->request.timeout;

  bool ok = true;
  for (const auto& [name, value] : transfer->request.headers) {
    // "Name;" is libcurl's way to send a header with an empty value.
    const std::string line = value.empty() ? absl::StrCat(name, ";")
                                           : absl::StrCat(name, ": ", value);
    curl_slist* appended = curl_slist_append(transfer->headers, line.c_str());
    ok = ok && appended != nullptr;
    if (appended != nullptr) transfer->headers = appended;
  }
  // "Name:" removes a header libcurl would add: no 100-continue round trip,
  // and no form Content-Type on a body the caller did not label.
  for (const char* removed : {"Expect", "Content-Type"}) {
    if (HasHeader(transfer->request, removed)) continue;
    curl_slist* appended = curl_slist_append(
        transfer->headers, absl::StrCat(removed, ":").c_str());
    ok = ok && appended != nullptr;
    if (appended != nullptr) transfer->headers = appended;
  }
  if (!ok) return Failed(Failure::kOther, "out of memory");

  CURL* easy = transfer->easy;
  const ClientRequest& r = transfer->request;
  const int64_t timeout_ms =
      std::max<int64_t>(1, absl::ToInt64Milliseconds(r.timeout));
  CURLcode code = CURLE_OK;
  // Stops at the first option libcurl refuses.
  auto set = [&code](CURLcode result) {
    if (code == CURLE_OK) code = result;
  };
  set(curl_easy_setopt(easy, CURLOPT_URL, r.url.c_str()));
  set(curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https"));
  set(curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"));
  set(curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L));
  set(curl_easy_setopt(easy, CURLOPT_PROXY, ""));
  set(curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L));
  set(curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1));
  set(curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L));
  set(curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L));
  if (!options_.ca_file.empty()) {
    // Only these CAs: no system directory besides.
    set(curl_easy_setopt(easy, CURLOPT_CAINFO, options_.ca_file.c_str()));
    set(curl_easy_setopt(easy, CURLOPT_CAPATH, nullptr));
  }
  set(curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                       static_cast<long>(timeout_ms)));
  set(curl_easy_setopt(easy, CURLOPT_USERAGENT, options_.user_agent.c_str()));
  set(curl_easy_setopt(easy, CURLOPT_HTTPHEADER, transfer->headers));
  if (r.method == "HEAD") {
    set(curl_easy_setopt(easy, CURLOPT_NOBODY, 1L));
  } else if (r.method == "GET" && r.body.empty()) {
    set(curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L));
  } else {
    // Not copied: the body lives in the transfer until it ends.
    set(curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                         static_cast<curl_off_t>(r.body.size())));
    set(curl_easy_setopt(easy, CURLOPT_POSTFIELDS, r.body.data()));
    if (r.method != "POST") {
      set(curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, r.method.c_str()));
    }
  }
  set(curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, OnOpenSocket));
  set(curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, transfer.get()));
  set(curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, OnHeader));
  set(curl_easy_setopt(easy, CURLOPT_HEADERDATA, transfer.get()));
  set(curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, OnBody));
  set(curl_easy_setopt(easy, CURLOPT_WRITEDATA, transfer.get()));
  set(curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer->error));
  if (code != CURLE_OK) {
    return Failed(Failure::kOther,
                  absl::StrCat("curl_easy_setopt: ", curl_easy_strerror(code)));
  }
  if (CURLMcode added = curl_multi_add_handle(multi_, easy);
      added != CURLM_OK) {
    return Failed(Failure::kOther, absl::StrCat("curl_multi_add_handle: ",
                                                curl_multi_strerror(added)));
  }
  transfer->done = std::move(queued.done);
  deadlines_.emplace(transfer->deadline, easy);
  active_.emplace(easy, std::move(transfer));
  return std::nullopt;
}

ClientResponse HttpClient::Impl::Result(Transfer& transfer, CURLcode code) {
  ClientResponse response;
  if (code == CURLE_OK) {
    long status = 0;
    curl_easy_getinfo(transfer.easy, CURLINFO_RESPONSE_CODE, &status);
    response.status = static_cast<int>(status);
    response.retry_after = transfer.retry_after;
    response.body = std::move(transfer.body);
  } else if (!transfer.blocked_address.empty() && !transfer.connect_attempted) {
    response = Failed(Failure::kBlockedAddress,
                      RefusedAddressMessage(transfer.blocked_address));
  } else {
    // The error buffer names hosts and addresses, never the body we sent.
    response = Failed(FailureOf(code), transfer.error[0] != '\0'
                                           ? std::string(transfer.error)
                                           : curl_easy_strerror(code));
  }
  response.elapsed = absl::Now() - transfer.started;
  return response;
}

std::vector<std::pair<std::function<void(ClientResponse)>, ClientResponse>>
HttpClient::Impl::Perform() {
  int running = 0;
  curl_multi_perform(multi_, &running);
  std::vector<std::pair<std::function<void(ClientResponse)>, ClientResponse>>
      finished;
  int queued_messages = 0;
  while (CURLMsg* message = curl_multi_info_read(multi_, &queued_messages)) {
    if (message->msg != CURLMSG_DONE) continue;
    // `message` is gone once the handle is removed.
    CURL* easy = message->easy_handle;
    const CURLcode code = message->data.result;
    auto it = active_.find(easy);
    if (it == active_.end()) continue;
    ClientResponse response = Result(*it->second, code);
    curl_multi_remove_handle(multi_, easy);
    deadlines_.erase({it->second->deadline, easy});
    finished.emplace_back(std::move(it->second->done), std::move(response));
    active_.erase(it);
  }
  const absl::Time now = absl::Now();
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    CURL* easy = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    auto it = active_.find(easy);
    if (it == active_.end()) continue;
    ClientResponse response =
        Failed(Failure::kTimeout,
               absl::StrCat("timed out after ",
                            absl::FormatDuration(it->second->request.timeout)));
    response.elapsed = now - it->second->started;
    curl_multi_remove_handle(multi_, easy);
    finished.emplace_back(std::move(it->second->done), std::move(response));
    active_.erase(it);
  }
  return finished;
}

void HttpClient::Impl::Poll() {
  int64_t wait_ms = kPollMillis;
  if (!deadlines_.empty()) {
    const absl::Duration until = deadlines_.begin()->first - absl::Now();
    wait_ms = std::clamp<int64_t>(
        absl::ToInt64Milliseconds(absl::Ceil(until, absl::Milliseconds(1))), 0,
        kPollMillis);
  }
  curl_multi_poll(multi_, nullptr, 0, static_cast<int>(wait_ms), nullptr);
}

std::vector<std::function<void(ClientResponse)>> HttpClient::Impl::Abandon() {
  std::vector<std::function<void(ClientResponse)>> callbacks;
  for (auto& [easy, transfer] : active_) {
    curl_multi_remove_handle(multi_, easy);
    callbacks.push_back(std::move(transfer->done));
  }
  active_.clear();
  deadlines_.clear();
  return callbacks;
}

absl::StatusOr<std::unique_ptr<HttpClient>> HttpClient::Create(
    HttpClientOptions options) {
  if (options.max_connections_per_host < 1 ||
      options.max_total_connections < 1) {
    return absl::InvalidArgumentError(
        "max_connections_per_host and max_total_connections must be at "
        "least 1");
  }
  if (!options.ca_file.empty()) {
    std::FILE* file = std::fopen(options.ca_file.c_str(), "r");
    if (file == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read ca_file ", options.ca_file));
    }
    std::fclose(file);
  }
  // Once per process, never cleaned up: other clients may come later.
  static const CURLcode global_init = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (global_init != CURLE_OK) {
    return absl::InternalError(
        absl::StrCat("curl_global_init: ", curl_easy_strerror(global_init)));
  }
  CURLM* multi = curl_multi_init();
  if (multi == nullptr) return absl::InternalError("curl_multi_init failed");
  curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                    static_cast<long>(options.max_connections_per_host));
  curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                    static_cast<long>(options.max_total_connections));
  // The connection cache holds as many idle connections as may be open.
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS,
                    static_cast<long>(options.max_total_connections));
  curl_multi_setopt(multi, CURLMOPT_PIPELINING, CURLPIPE_NOTHING);

  std::unique_ptr<HttpClient> client(
      new HttpClient(std::make_unique<Impl>(std::move(options), multi)));
  client->thread_ = std::thread([c = client.get()] { c->Run(); });
  if (::pthread_getcpuclockid(client->thread_.native_handle(),
                              &client->cpu_clock_) != 0) {
    client->cpu_clock_ = CLOCK_THREAD_CPUTIME_ID;  // Never happens on Linux.
  }
  return client;
}

HttpClient::HttpClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpClient::~HttpClient() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    impl_->Wakeup();
  }
  if (thread_.joinable()) thread_.join();
}

void HttpClient::Send(ClientRequest request,
                      std::function<void(ClientResponse)> done) {
  in_flight_.fetch_add(1);
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      queue_.push_back(Queued{std::move(request), std::move(done)});
      // Under the lock: the destructor frees the multi handle only after
      // stopping_ is set.
      impl_->Wakeup();
      return;
    }
  }
  Complete(done, Stopped());
}

void HttpClient::Complete(std::function<void(ClientResponse)>& done,
                          ClientResponse response) {
  done(std::move(response));
  in_flight_.fetch_sub(1);
}

absl::Duration HttpClient::CpuTime() const {
  timespec used{};
  if (::clock_gettime(cpu_clock_, &used) != 0) return absl::ZeroDuration();
  return absl::DurationFromTimespec(used);
}

void HttpClient::Run() {
  for (;;) {
    std::deque<Queued> incoming;
    bool stopping = false;
    {
      absl::MutexLock lock(&mu_);
      incoming.swap(queue_);
      stopping = stopping_;
    }
    if (stopping) {
      // Send() no longer queues, so these are the last ones.
      for (Queued& queued : incoming) Complete(queued.done, Stopped());
      for (auto& done : impl_->Abandon()) Complete(done, Stopped());
      return;
    }
    for (Queued& queued : incoming) {
      if (std::optional<ClientResponse> failed = impl_->Start(queued)) {
        Complete(queued.done, *std::move(failed));
      }
    }
    for (auto& [done, response] : impl_->Perform()) {
      Complete(done, std::move(response));
    }
    impl_->Poll();
  }
}

}  // namespace http
}  // namespace cqrs
