// The soak (issue 18 §5): the built `bank` under mixed traffic for a long
// time, with a fault every minute, run through scripts/soak (not ctest).
//
// Processes, all on one schema of the throwaway cluster:
//   main    `bank serve` with its projections, webhook deliveries and
//           transfer process: never killed, so its resident memory and
//           open descriptors show whether anything grows;
//   api     `bank serve --no-projections`: SIGKILLed and started again;
//   worker  `bank project`: SIGKILLed and started again (it and main take
//           the projections over from each other).
// Clients (kClients threads) send deposits, withdrawals and transfers, each
// with its own Idempotency-Key and retried with it until they have an
// answer other than 503, through main or api at random; they read their
// own writes back with X-Min-Position, list accounts, read /stats,
// transactions and transfers. A follower reads GET /events of main with
// long-polls from the beginning; a webhook endpoint here gets every
// deposit.
//
// The faults, one per minute (CQRS_SOAK_FAULT_SECONDS), in turn: SIGKILL of
// api, a crash-restart of PostgreSQL (`pg_ctl restart -m immediate`), SIGKILL
// of worker, pg_terminate_backend of every session. Every 5 minutes
// (CQRS_SOAK_REBUILD_SECONDS) `bank projections rebuild --all` runs, on a
// thread of its own while the faults go on (again, until it succeeds, when
// a fault ended it).
//
// At the end, with the traffic stopped:
//   - every command either had an answer or gets one now (its key again);
//   - the log holds exactly the acknowledged deposits and withdrawals (by
//     stream and version, with their amounts) and one TransferRequested per
//     acknowledged transfer; every transfer completed or failed;
//   - each account's read model (through main and api) equals the fold of
//     its stream (balance and version), and the balances add up to the
//     acknowledged deposits minus withdrawals (/stats too): money is neither
//     made nor lost by transfers;
//   - the feed gave every event of the log exactly once, in the log's order;
//   - the webhook endpoint got every deposit;
//   - `bank projections status` shows nothing parked, failed or stopped;
//   - no answer was a 5xx other than 503 and no read-your-writes read was
//     stale;
//   - main's open descriptors did not grow after the warm-up, nor its
//     resident memory by more than half.
// The samples (every 5 s: each process's resident memory, descriptors and
// threads) go to CQRS_SOAK_OUTPUT/samples.csv, the summary to
// CQRS_SOAK_OUTPUT/summary.txt and to standard error.
//
// Duration: CQRS_SOAK_SECONDS (default 1800).
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "rapidjson/document.h"
#include "tests/framework/http/client.h"
#include "tests/support/api_key.h"
#include "tests/support/child_process.h"
#include "tests/support/json_body.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"
#include "tests/support/webhook_receiver.h"

namespace {

namespace http = cqrs::http;
using cqrs::http_test::ClientResponse;
using cqrs::http_test::TestClient;
using cqrs::testing::ChildProcess;

constexpr int kAccounts = 40;
constexpr int kClients = 8;
constexpr int64_t kOpeningDeposit = 1'000'000;

int64_t EnvSeconds(const char* name, int64_t fallback) {
  const char* text = std::getenv(name);
  int64_t value = 0;
  if (text == nullptr || !absl::SimpleAtoi(text, &value) || value <= 0) {
    return fallback;
  }
  return value;
}

std::string AccountId(int i) { return absl::StrCat("soak-", i); }

// Pacing, not a wait for a condition: a client retrying a 503, or waiting
// for a process to come back, in a tight loop would only load the machine.
void Pause() { absl::SleepFor(absl::Milliseconds(20)); }

// A `bank` process that the soak may kill and start again. The control
// thread starts and kills it; the clients read its port (0 while it is
// down), the sampler its pid.
class Proc {
 public:
  Proc(std::string label, std::vector<std::string> args, bool server)
      : label_(std::move(label)), args_(std::move(args)), server_(server) {
    Start();
  }
  ~Proc() {
    absl::MutexLock lock(&mu_);
    process_.reset();  // SIGKILL
  }

  const std::string& label() const { return label_; }
  int port() const { return port_.load(); }
  int starts() const { return starts_.load(); }

  pid_t pid() const {
    absl::MutexLock lock(&mu_);
    return process_ == nullptr ? -1 : process_->pid();
  }

  // Starts the process (again); a server is ready (GET /readyz 200) when
  // this returns.
  void Start() {
    auto process = std::make_unique<ChildProcess>(
        BANK_BINARY, args_, ChildProcess::Output::kCapture);
    int port = 0;
    if (server_) {
      port = process->WaitForListeningPort();
      REQUIRE(cqrs::testing::Eventually([&] { return Ready(port) == 200; },
                                        absl::Seconds(120)));
    }
    absl::MutexLock lock(&mu_);
    process_ = std::move(process);
    port_ = port;
    ++starts_;
  }

  // SIGKILL; the process's error lines are kept for the summary.
  void Kill() {
    absl::MutexLock lock(&mu_);
    port_ = 0;
    REQUIRE(process_->Kill(SIGKILL) == 128 + SIGKILL);
    absl::StrAppend(&past_errors_, ErrorLines(process_->CapturedOutput()));
    process_.reset();
  }

  // GET /readyz's status (0 when it does not answer).
  static int Ready(int port) {
    auto client = TestClient::Connect(port, absl::Seconds(5));
    if (!client.ok()) return 0;
    auto r = (*client)->Send("GET", "/readyz");
    return r.ok() ? r->status : 0;
  }

  // The ERROR lines and the 500 access lines of every run of the process.
  std::string Errors() const {
    absl::MutexLock lock(&mu_);
    return absl::StrCat(
        past_errors_,
        process_ == nullptr ? "" : ErrorLines(process_->CapturedOutput()));
  }

 private:
  std::string ErrorLines(const std::string& output) const {
    std::string out;
    for (absl::string_view line : absl::StrSplit(output, '\n')) {
      if (absl::StrContains(line, " ERROR ") ||
          absl::StrContains(line, "status=500")) {
        absl::StrAppend(&out, label_, ": ", line, "\n");
      }
    }
    return out;
  }

  const std::string label_;
  const std::vector<std::string> args_;
  const bool server_;
  std::atomic<int> port_{0};
  std::atomic<int> starts_{0};
  mutable absl::Mutex mu_;
  std::unique_ptr<ChildProcess> process_ ABSL_GUARDED_BY(mu_);
  std::string past_errors_ ABSL_GUARDED_BY(mu_);
};

// A command a client sent: what to send again until it has an answer.
struct Command {
  std::string target;
  std::string body;
  std::string key;
};

// A (stream, version) of the log.
using StreamVersion = std::pair<std::string, int64_t>;

// What the clients were told.
struct Journal {
  absl::Mutex mu;
  std::map<StreamVersion, int64_t> deposits ABSL_GUARDED_BY(mu);
  std::map<StreamVersion, int64_t> withdrawals ABSL_GUARDED_BY(mu);
  std::set<std::string> transfers ABSL_GUARDED_BY(mu);
  std::map<int, int64_t> statuses ABSL_GUARDED_BY(mu);
  int64_t refused_withdrawals ABSL_GUARDED_BY(mu) = 0;  // 422: not enough
  int64_t reads ABSL_GUARDED_BY(mu) = 0;
  int64_t queries ABSL_GUARDED_BY(mu) = 0;
  std::vector<std::string> errors ABSL_GUARDED_BY(mu);  // the first 20
  std::vector<Command> unanswered ABSL_GUARDED_BY(mu);

  void Error(std::string what) {
    absl::MutexLock lock(&mu);
    if (errors.size() < 20) errors.push_back(std::move(what));
  }
  int64_t Acknowledged() {
    absl::MutexLock lock(&mu);
    return static_cast<int64_t>(deposits.size() + withdrawals.size() +
                                transfers.size());
  }
};

rapidjson::Document Parse(const std::string& body) {
  rapidjson::Document doc;
  doc.Parse(body.c_str());
  return doc;
}

// A client's connections to the APIs: each request goes to one of them at
// random, to the other when that one is down.
class Session {
 public:
  Session(std::vector<const Proc*> apis, std::string token, uint32_t seed)
      : apis_(std::move(apis)),
        token_(std::move(token)),
        conns_(apis_.size()),
        ports_(apis_.size(), 0),
        rng_(seed) {}

  std::mt19937& rng() { return rng_; }

  // One request, no retry.
  absl::StatusOr<ClientResponse> SendOnce(const std::string& method,
                                          const std::string& target,
                                          const std::string& body,
                                          const http::HeaderList& headers) {
    size_t i = std::uniform_int_distribution<size_t>(0, apis_.size() - 1)(rng_);
    for (size_t tries = 0; tries < apis_.size(); ++tries) {
      const size_t k = (i + tries) % apis_.size();
      const int port = apis_[k]->port();
      if (port == 0) continue;
      if (conns_[k] == nullptr || ports_[k] != port) {
        conns_[k].reset();
        auto client = TestClient::Connect(port, absl::Seconds(2));
        if (!client.ok()) continue;
        (*client)->SetDefaultHeaders(cqrs::testing::BearerHeader(token_));
        conns_[k] = *std::move(client);
        ports_[k] = port;
      }
      auto r = conns_[k]->Send(method, target, body, headers);
      if (!r.ok()) conns_[k].reset();
      return r;
    }
    return absl::UnavailableError("no API is up");
  }

  // Sends until the answer is neither missing nor a 503 (nor a 504 for a
  // query), for at most `limit`; nullopt then.
  std::optional<ClientResponse> Send(
      const std::string& method, const std::string& target,
      const std::string& body, const http::HeaderList& headers,
      Journal& journal, absl::Duration limit = absl::Seconds(120)) {
    const absl::Time deadline = absl::Now() + limit;
    while (absl::Now() < deadline) {
      auto r = SendOnce(method, target, body, headers);
      if (r.ok()) {
        {
          absl::MutexLock lock(&journal.mu);
          ++journal.statuses[r->status];
        }
        if (r->status != 503 && !(method == "GET" && r->status == 504)) {
          return *std::move(r);
        }
      }
      Pause();
    }
    return std::nullopt;
  }

 private:
  const std::vector<const Proc*> apis_;
  const std::string token_;
  std::vector<std::unique_ptr<TestClient>> conns_;
  std::vector<int> ports_;
  std::mt19937 rng_;
};

// Records a command's answer in the journal; false when the answer is one
// the soak never expects.
bool Record(const Command& command, const ClientResponse& r, Journal& journal) {
  rapidjson::Document doc = Parse(r.body);
  const bool deposit = absl::EndsWith(command.target, "/deposit");
  const bool withdrawal = absl::EndsWith(command.target, "/withdraw");
  if ((deposit || withdrawal) && r.status == 200 && doc.IsObject() &&
      doc.HasMember("version") && doc["version"].IsInt64()) {
    const std::string account(
        absl::StripSuffix(absl::StripPrefix(command.target, "/accounts/"),
                          deposit ? "/deposit" : "/withdraw"));
    const StreamVersion at{absl::StrCat("account-", account),
                           doc["version"].GetInt64()};
    rapidjson::Document amount_doc = Parse(command.body);
    const int64_t amount = amount_doc["amount"].GetInt64();
    absl::MutexLock lock(&journal.mu);
    auto& acked = deposit ? journal.deposits : journal.withdrawals;
    return acked.emplace(at, amount).second;  // two acks of one version?
  }
  if (withdrawal && r.status == 422 &&
      absl::StrContains(r.body, "insufficient_funds")) {
    absl::MutexLock lock(&journal.mu);
    ++journal.refused_withdrawals;
    return true;
  }
  if (command.target == "/transfers" && r.status == 202 && doc.IsObject() &&
      doc.HasMember("transfer_id")) {
    absl::MutexLock lock(&journal.mu);
    journal.transfers.insert(doc["transfer_id"].GetString());
    return true;
  }
  return false;
}

// Sends `command` until it has an answer and records it; a command with
// no answer in time is kept for the end.
std::optional<ClientResponse> Run(Session& s, const Command& command,
                                  Journal& journal,
                                  absl::Duration limit = absl::Seconds(120)) {
  const http::HeaderList headers = {{"Content-Type", "application/json"},
                                    {"Idempotency-Key", command.key}};
  auto r =
      s.Send("POST", command.target, command.body, headers, journal, limit);
  if (!r.has_value()) {
    absl::MutexLock lock(&journal.mu);
    journal.unanswered.push_back(command);
    return std::nullopt;
  }
  if (!Record(command, *r, journal)) {
    journal.Error(absl::StrCat("POST ", command.target, " ", command.body, ": ",
                               r->status, " ", r->body));
  }
  return r;
}

// One client's traffic until `stop`.
void Client(int index, Session& s, Journal& journal,
            const std::atomic<bool>& stop) {
  std::uniform_int_distribution<int> percent(0, 99);
  std::uniform_int_distribution<int> account(0, kAccounts - 1);
  std::uniform_int_distribution<int> pace_ms(10, 50);
  // The client's last acknowledged write to an account: read back with its
  // position, the account shows at least its version.
  struct Write {
    std::string account;
    int64_t version = 0;
    std::string position;
  };
  std::optional<Write> last_write;
  std::string last_transfer, last_transfer_position;
  int64_t n = 0;
  while (!stop) {
    const int op = percent(s.rng());
    const std::string key = absl::StrCat("soak-", index, "-", ++n);
    if (op < 60) {
      const bool deposit = op < 45;
      const std::string id = AccountId(account(s.rng()));
      const int64_t amount = std::uniform_int_distribution<int64_t>(
          1, deposit ? 10'000 : 5'000)(s.rng());
      Command c{
          absl::StrCat("/accounts/", id, deposit ? "/deposit" : "/withdraw"),
          cqrs::testing::JsonBody({}, {{"amount", amount}}), key};
      auto r = Run(s, c, journal);
      if (r.has_value() && r->status == 200) {
        rapidjson::Document doc = Parse(r->body);
        last_write =
            Write{id, doc["version"].GetInt64(), doc["position"].GetString()};
      }
    } else if (op < 75) {
      const int from = account(s.rng());
      const int to =
          (from + 1 + account(s.rng()) % (kAccounts - 1)) % kAccounts;
      const std::string id = absl::StrCat("t-", key);
      Command c{"/transfers",
                cqrs::testing::JsonBody(
                    {{"from", AccountId(from)},
                     {"to", AccountId(to)},
                     {"transfer_id", id}},
                    {{"amount", std::uniform_int_distribution<int64_t>(
                                    1, 5'000)(s.rng())}}),
                key};
      auto r = Run(s, c, journal);
      if (r.has_value() && r->status == 202) {
        last_transfer = id;
        last_transfer_position = Parse(r->body)["position"].GetString();
      }
    } else {
      // A query; a read of one's own last write checks its version.
      std::string target;
      http::HeaderList headers;
      std::optional<int64_t> at_least;
      if (op < 85 && last_write.has_value()) {
        target = absl::StrCat("/accounts/", last_write->account);
        headers.push_back({"X-Min-Position", last_write->position});
        at_least = last_write->version;
      } else if (op < 90) {
        target = "/accounts?owner=soak&limit=50";
      } else if (op < 94) {
        target = "/stats";
      } else if (op < 97 || last_transfer.empty()) {
        target = absl::StrCat("/accounts/", AccountId(account(s.rng())),
                              "/transactions?limit=20");
      } else {
        target = absl::StrCat("/transfers/", last_transfer);
        headers.push_back({"X-Min-Position", last_transfer_position});
      }
      auto r = s.Send("GET", target, "", headers, journal);
      if (!r.has_value()) {
        journal.Error(absl::StrCat("GET ", target, ": no answer in 120 s"));
      } else if (r->status != 200) {
        journal.Error(
            absl::StrCat("GET ", target, ": ", r->status, " ", r->body));
      } else if (at_least.has_value()) {
        rapidjson::Document doc = Parse(r->body);
        const int64_t version = doc.IsObject() && doc.HasMember("version")
                                    ? doc["version"].GetInt64()
                                    : -1;
        if (version < *at_least) {
          journal.Error(absl::StrCat("stale read of ", target, " at ",
                                     last_write->position, ": version ",
                                     version, " < ", *at_least));
        }
        absl::MutexLock lock(&journal.mu);
        ++journal.reads;
      } else {
        absl::MutexLock lock(&journal.mu);
        ++journal.queries;
      }
    }
    // Pacing: a mixed load that leaves the machine room for the faults'
    // recovery, not a throughput test.
    absl::SleepFor(absl::Milliseconds(pace_ms(s.rng())));
  }
}

// Follows GET /events of `api` with long-polls from the beginning of the
// log, recording every event id in the order it came.
class FeedFollower {
 public:
  FeedFollower(const Proc& api, std::string token)
      : api_(api), token_(std::move(token)), thread_([this] { Run(); }) {}
  ~FeedFollower() {
    stop_ = true;
    thread_.join();
  }

  std::vector<std::string> Ids() const {
    absl::MutexLock lock(&mu_);
    return ids_;
  }
  size_t Count() const {
    absl::MutexLock lock(&mu_);
    return ids_.size();
  }
  std::string Error() const {
    absl::MutexLock lock(&mu_);
    return error_;
  }

 private:
  void Run() {
    std::unique_ptr<TestClient> client;
    std::string next;
    while (!stop_) {
      if (client == nullptr) {
        auto c = TestClient::Connect(api_.port(), absl::Seconds(2));
        if (!c.ok()) {
          Pause();
          continue;
        }
        client = *std::move(c);
        client->SetDefaultHeaders(cqrs::testing::BearerHeader(token_));
      }
      const std::string target = absl::StrCat(
          "/events?limit=1000&wait=1000", next.empty() ? "" : "&after=", next);
      auto r = client->Send("GET", target);
      if (!r.ok()) {
        client.reset();
        Pause();
        continue;
      }
      if (r->status == 503) {
        Pause();
        continue;
      }
      rapidjson::Document doc = Parse(r->body);
      if (r->status != 200 || !doc.IsObject() || !doc.HasMember("items")) {
        absl::MutexLock lock(&mu_);
        if (error_.empty()) {
          error_ = absl::StrCat("GET ", target, ": ", r->status, " ", r->body);
        }
        Pause();
        continue;
      }
      absl::MutexLock lock(&mu_);
      for (const auto& item : doc["items"].GetArray()) {
        ids_.push_back(item["id"].GetString());
      }
      next = doc["next"].GetString();
    }
  }

  const Proc& api_;
  const std::string token_;
  std::atomic<bool> stop_{false};
  mutable absl::Mutex mu_;
  std::vector<std::string> ids_ ABSL_GUARDED_BY(mu_);
  std::string error_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// One sample of a process's resources.
struct Sample {
  double seconds;
  std::string process;
  pid_t pid;
  int64_t rss_kb;
  int64_t rss_anon_kb;  // of rss_kb: the heap, stacks and other private memory
  int64_t rss_file_kb;  // of rss_kb: pages of the binary, libraries, files
  int64_t fds;
  int64_t threads;
};

// /proc/<pid>/status's VmRSS (and its RssAnon and RssFile parts) and
// Threads, and the entries of /proc/<pid>/fd; nullopt when the process is
// gone.
std::optional<Sample> Measure(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  Sample s{};
  s.pid = pid;
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  if (!status) return std::nullopt;
  std::string line;
  while (std::getline(status, line)) {
    std::vector<absl::string_view> f =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.size() < 2) continue;
    if (f[0] == "VmRSS:") (void)absl::SimpleAtoi(f[1], &s.rss_kb);
    if (f[0] == "RssAnon:") (void)absl::SimpleAtoi(f[1], &s.rss_anon_kb);
    if (f[0] == "RssFile:") (void)absl::SimpleAtoi(f[1], &s.rss_file_kb);
    if (f[0] == "Threads:") (void)absl::SimpleAtoi(f[1], &s.threads);
  }
  std::error_code ec;
  for (std::filesystem::directory_iterator it(
           absl::StrCat("/proc/", pid, "/fd"), ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++s.fds;
  }
  return s;
}

// Samples every process every 5 s on a thread of its own.
class Sampler {
 public:
  explicit Sampler(std::vector<const Proc*> procs)
      : procs_(std::move(procs)),
        start_(absl::Now()),
        thread_([this] { Run(); }) {}
  ~Sampler() { Stop(); }

  void Stop() {
    if (!stopped_.HasBeenNotified()) stopped_.Notify();
    if (thread_.joinable()) thread_.join();
  }
  std::vector<Sample> Samples() const {
    absl::MutexLock lock(&mu_);
    return samples_;
  }

 private:
  void Run() {
    while (!stopped_.HasBeenNotified()) {
      for (const Proc* p : procs_) {
        std::optional<Sample> s = Measure(p->pid());
        if (!s.has_value()) continue;
        s->seconds = absl::ToDoubleSeconds(absl::Now() - start_);
        s->process = p->label();
        absl::MutexLock lock(&mu_);
        samples_.push_back(*s);
      }
      // The sampling interval; Stop() ends the wait at once.
      stopped_.WaitForNotificationWithTimeout(absl::Seconds(5));
    }
  }

  const std::vector<const Proc*> procs_;
  const absl::Time start_;
  absl::Notification stopped_;
  mutable absl::Mutex mu_;
  std::vector<Sample> samples_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

struct CliResult {
  int exit_code;
  std::string output;
};

// Runs `bank projections rebuild --all` (through `rebuild`) every `every`
// on a thread of its own, while the faults go on: a rebuild that a fault
// ended is run again, for up to 5 minutes. Records how long each took, reruns
// included (no Catch2 here: the test checks Errors()).
class Rebuilder {
 public:
  Rebuilder(absl::Duration every, std::function<CliResult()> rebuild)
      : every_(every),
        rebuild_(std::move(rebuild)),
        thread_([this] { Run(); }) {}
  ~Rebuilder() { Stop(); }

  void Stop() {
    if (!stopped_.HasBeenNotified()) stopped_.Notify();
    if (thread_.joinable()) thread_.join();
  }
  std::vector<double> Seconds() const {
    absl::MutexLock lock(&mu_);
    return seconds_;
  }
  int64_t Reruns() const {
    absl::MutexLock lock(&mu_);
    return reruns_;
  }
  std::string Errors() const {
    absl::MutexLock lock(&mu_);
    return errors_;
  }

 private:
  void Run() {
    const absl::Time start = absl::Now();
    for (int64_t n = 1;; ++n) {
      // The schedule's pacing: the next rebuild is due at this time, unless
      // Stop() comes first.
      if (stopped_.WaitForNotificationWithDeadline(start + every_ * n)) return;
      const absl::Time began = absl::Now();
      // Rerun pacing between attempts: the database may take seconds to
      // accept sessions again.
      while (!Done(rebuild_(), began, n)) {
        absl::SleepFor(absl::Seconds(1));
      }
    }
  }

  // Records the attempt of rebuild `n` that just ended with `r` (its first
  // attempt began at `began`); false when it is to be run again.
  bool Done(const CliResult& r, absl::Time began, int64_t n) {
    const absl::Duration took = absl::Now() - began;
    absl::MutexLock lock(&mu_);
    if (r.exit_code == 0) {
      seconds_.push_back(absl::ToDoubleSeconds(took));
      return true;
    }
    ++reruns_;
    if (took > absl::Minutes(5)) {
      absl::StrAppend(&errors_, "rebuild ", n,
                      " did not succeed in 5 minutes:\n", r.output, "\n");
      return true;
    }
    return false;
  }

  const absl::Duration every_;
  const std::function<CliResult()> rebuild_;
  absl::Notification stopped_;
  mutable absl::Mutex mu_;
  std::vector<double> seconds_ ABSL_GUARDED_BY(mu_);
  int64_t reruns_ ABSL_GUARDED_BY(mu_) = 0;
  std::string errors_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace

TEST_CASE("soak: mixed bank traffic with a fault every minute", "[soak]") {
  const int64_t duration = EnvSeconds("CQRS_SOAK_SECONDS", 1800);
  const int64_t fault_every = EnvSeconds("CQRS_SOAK_FAULT_SECONDS", 60);
  const int64_t rebuild_every = EnvSeconds("CQRS_SOAK_REBUILD_SECONDS", 300);
  const char* output_env = std::getenv("CQRS_SOAK_OUTPUT");
  const std::string output = output_env == nullptr ? "." : output_env;
  std::ostringstream summary;
  auto say = [&](const std::string& line) {
    std::cerr << "soak: " << line << std::endl;
    summary << line << "\n";
  };

  cqrs::testing::TestSchema schema;
  const std::string token =
      cqrs::testing::CreateToken(schema.pool(), schema.name());
  // The bank's sessions commit synchronously, as a production cluster's
  // do (the throwaway cluster's default is off, for speed).
  const std::string url =
      absl::StrCat(schema.url(), " options='-c synchronous_commit=on'");
  auto with_database = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--database-url", url, "--schema", schema.name()});
    return args;
  };
  auto cli = [&](std::vector<std::string> args) {
    ChildProcess p(BANK_BINARY, with_database(std::move(args)),
                   ChildProcess::Output::kCapture);
    const int exit_code = p.Wait();
    return CliResult{exit_code, p.CapturedOutput()};
  };

  cqrs::testing::WebhookReceiver receiver;  // outlives every process
  {
    CliResult created = cli({"webhooks", "create", "--url", receiver.Url(),
                             "--type", "bank.account.deposited",
                             "--webhook-allow-network", "127.0.0.1/32"});
    INFO(created.output);
    REQUIRE(created.exit_code == 0);
  }
  // Loopback endpoints need --webhook-allow-network; a failed attempt is
  // tried again within seconds, not after the default 5 minutes.
  const std::vector<std::string> delivery = {
      "--webhook-allow-network", "127.0.0.1/32", "--webhook-retry-schedule",
      "0s,1s,1s,2s,5s,10s,30s,60s"};
  std::vector<std::string> serve = {"serve", "--listen", "127.0.0.1:0",
                                    "--workers", "8"};
  serve.insert(serve.end(), delivery.begin(), delivery.end());
  std::vector<std::string> project = {"project"};
  project.insert(project.end(), delivery.begin(), delivery.end());
  Proc main("main", with_database(serve), /*server=*/true);
  Proc api("api",
           with_database({"serve", "--listen", "127.0.0.1:0",
                          "--no-projections", "--workers", "8"}),
           /*server=*/true);
  Proc worker("worker", with_database(project), /*server=*/false);

  Journal journal;
  {
    Session s({&main}, token, 1);
    for (int i = 0; i < kAccounts; ++i) {
      auto r = s.Send("POST", "/accounts",
                      cqrs::testing::JsonBody({{"owner", "soak"},
                                               {"currency", "EUR"},
                                               {"account_id", AccountId(i)}},
                                              {}),
                      {{"Content-Type", "application/json"}}, journal);
      REQUIRE(r.has_value());
      REQUIRE(r->status == 201);
      auto d = Run(s,
                   {absl::StrCat("/accounts/", AccountId(i), "/deposit"),
                    cqrs::testing::JsonBody({}, {{"amount", kOpeningDeposit}}),
                    absl::StrCat("open-", i)},
                   journal);
      REQUIRE(d.has_value());
      REQUIRE(d->status == 200);
    }
  }

  FeedFollower feed(main, token);
  Sampler sampler({&main, &api, &worker});
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<Session>> sessions;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    sessions.push_back(std::make_unique<Session>(
        std::vector<const Proc*>{&main, &api}, token, 1000 + c));
    clients.emplace_back([&, c] { Client(c, *sessions[c], journal, stop); });
  }

  // The rebuilds on a thread of their own; the faults, one per interval.
  Rebuilder rebuilder(absl::Seconds(rebuild_every), [&] {
    return cli({"projections", "rebuild", "--all"});
  });
  const absl::Time start = absl::Now();
  int64_t ended_sessions = 0;
  for (int64_t slot = 1; slot * fault_every <= duration; ++slot) {
    // The schedule's pacing: the next fault is due at this time.
    absl::SleepFor(start + absl::Seconds(slot * fault_every) - absl::Now());
    std::string fault;
    switch (slot % 4) {
      case 1:
        api.Kill();
        api.Start();
        fault = "SIGKILL api, started again";
        break;
      case 2:
        cqrs::testing::ControlTestDatabase("restart");
        fault = "PostgreSQL crash-restarted";
        break;
      case 3:
        worker.Kill();
        worker.Start();
        fault = "SIGKILL worker, started again";
        break;
      default: {
        const int64_t ended =
            cqrs::testing::TerminateOtherSessions(schema.url());
        ended_sessions += ended;
        fault = absl::StrCat(ended, " sessions terminated");
      }
    }
    std::optional<Sample> m = Measure(main.pid());
    say(absl::StrCat(absl::ToInt64Seconds(absl::Now() - start), " s: ", fault,
                     "; ", journal.Acknowledged(), " commands acknowledged, ",
                     feed.Count(), " events followed, ",
                     rebuilder.Seconds().size(), " rebuilds; main rss ",
                     m ? m->rss_kb : -1, " kB, ", m ? m->fds : -1, " fds"));
  }
  const double traffic_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  stop = true;
  for (std::thread& t : clients) t.join();
  sampler.Stop();
  rebuilder.Stop();
  {
    INFO(rebuilder.Errors());
    CHECK(rebuilder.Errors().empty());
    std::string took;
    for (double seconds : rebuilder.Seconds()) {
      absl::StrAppend(&took, took.empty() ? "" : ", ",
                      absl::StrFormat("%.1f", seconds));
    }
    say(absl::StrCat(rebuilder.Seconds().size(), " rebuilds took ", took,
                     " s (", rebuilder.Reruns(),
                     " reruns after a fault ended one)"));
  }

  // Every command has an answer: the ones that had none in time are sent
  // again with their keys.
  std::vector<Command> unanswered;
  {
    absl::MutexLock lock(&journal.mu);
    unanswered.swap(journal.unanswered);
  }
  {
    Session s({&main, &api}, token, 7);
    for (const Command& c : unanswered) {
      CHECK(Run(s, c, journal, absl::Seconds(300)).has_value());
    }
  }

  std::map<std::string, int64_t> expected_balance;  // by stream: the fold
  std::map<std::string, int64_t> expected_version;
  int64_t deposited = 0, withdrawn = 0;
  {
    absl::MutexLock lock(&journal.mu);
    INFO(absl::StrJoin(journal.errors, "\n")
         << "\nprocess errors:\n"
         << main.Errors() << api.Errors() << worker.Errors());
    CHECK(journal.errors.empty());
    for (const auto& [at, amount] : journal.deposits) deposited += amount;
    for (const auto& [at, amount] : journal.withdrawals) withdrawn += amount;
    say(absl::StrCat(
        "traffic: ", static_cast<int64_t>(traffic_seconds), " s, ",
        journal.deposits.size(), " deposits, ", journal.withdrawals.size(),
        " withdrawals (", journal.refused_withdrawals,
        " refused: insufficient funds), ", journal.transfers.size(),
        " transfers acknowledged; ", journal.reads, " read-your-writes reads, ",
        journal.queries, " other queries; ", journal.statuses[503],
        " answers were 503, ", unanswered.size(),
        " commands answered only at the end; api started ", api.starts(),
        " times, worker ", worker.starts(), ", ", ended_sessions,
        " sessions terminated"));

    // The log holds exactly the acknowledged deposits and withdrawals, and
    // one request per acknowledged transfer.
    pqxx::connection conn(schema.url());
    pqxx::nontransaction tx(conn);
    std::map<StreamVersion, int64_t> logged_deposits, logged_withdrawals;
    for (const auto& row : tx.exec(absl::StrCat(
             "SELECT stream_id, stream_version, (data->>'amount')::bigint, "
             "event_type = 'MoneyDeposited' FROM ",
             schema.name(),
             ".events WHERE event_type IN ('MoneyDeposited', "
             "'MoneyWithdrawn')"))) {
      auto& logged = row[3].as<bool>() ? logged_deposits : logged_withdrawals;
      logged[{row[0].as<std::string>(), row[1].as<int64_t>()}] =
          row[2].as<int64_t>();
    }
    CHECK(logged_deposits.size() == journal.deposits.size());
    CHECK(logged_deposits == journal.deposits);
    CHECK(logged_withdrawals.size() == journal.withdrawals.size());
    CHECK(logged_withdrawals == journal.withdrawals);
    std::set<std::string> requested;
    for (const auto& row : tx.exec(absl::StrCat(
             "SELECT substr(stream_id, 10), count(*) FROM ", schema.name(),
             ".events WHERE event_type = 'TransferRequested' GROUP BY 1"))) {
      CHECK(row[1].as<int64_t>() == 1);
      requested.insert(row[0].as<std::string>());
    }
    CHECK(requested == journal.transfers);

    // Every transfer ends.
    CHECK(cqrs::testing::Eventually(
        [&] {
          return tx.exec1(absl::StrCat(
                     "SELECT count(*) FROM (SELECT stream_id FROM ",
                     schema.name(),
                     ".events WHERE stream_id LIKE 'transfer-%' GROUP BY "
                     "stream_id HAVING NOT bool_or(event_type IN "
                     "('TransferCompleted', 'TransferFailed'))) open"))[0]
                     .as<int64_t>() == 0;
        },
        absl::Seconds(120), absl::Milliseconds(200)));

    // The fold of each account's stream.
    for (const auto& row : tx.exec(absl::StrCat(
             "SELECT substr(stream_id, 9), count(*), coalesce(sum(CASE "
             "WHEN event_type IN ('MoneyDeposited', "
             "'AccountCreditedForTransfer', 'AccountRefundedForTransfer') "
             "THEN (data->>'amount')::bigint WHEN event_type IN "
             "('MoneyWithdrawn', 'AccountDebitedForTransfer') THEN "
             "-(data->>'amount')::bigint ELSE 0 END), 0) FROM ",
             schema.name(),
             ".events WHERE stream_id LIKE 'account-%' GROUP BY 1"))) {
      expected_version[row[0].as<std::string>()] = row[1].as<int64_t>();
      expected_balance[row[0].as<std::string>()] = row[2].as<int64_t>();
    }
  }
  REQUIRE(expected_balance.size() == static_cast<size_t>(kAccounts));
  int64_t total = 0;
  for (const auto& [id, balance] : expected_balance) total += balance;
  // Transfers move money, they neither make nor lose it.
  CHECK(total == deposited - withdrawn);

  // Each read model, through each API, equals the fold; /stats adds up.
  for (const Proc* p : {&main, &api}) {
    Session s({p}, token, 9);
    std::string mismatch;
    const bool folded = cqrs::testing::Eventually(
        [&] {
          for (const auto& [id, balance] : expected_balance) {
            auto r = s.SendOnce("GET", absl::StrCat("/accounts/", id), "", {});
            if (!r.ok()) return false;
            rapidjson::Document doc = Parse(r->body);
            if (r->status != 200 || !doc.IsObject()) {
              mismatch = absl::StrCat(id, ": ", r->status, " ", r->body);
              return false;
            }
            if (doc["balance"].GetInt64() != balance ||
                doc["version"].GetInt64() != expected_version[id]) {
              mismatch =
                  absl::StrCat(id, ": ", r->body, ", the fold: balance ",
                               balance, ", version ", expected_version[id]);
              return false;
            }
          }
          auto r = s.SendOnce("GET", "/stats", "", {});
          if (!r.ok() || r->status != 200) return false;
          rapidjson::Document doc = Parse(r->body);
          if (doc["total_balance"]["EUR"].GetInt64() != total ||
              doc["transfers"]["pending"].GetInt64() != 0) {
            mismatch = absl::StrCat("/stats: ", r->body, ", the fold: ", total);
            return false;
          }
          return true;
        },
        absl::Seconds(120), absl::Milliseconds(100));
    INFO(p->label() << ": " << mismatch);
    CHECK(folded);
  }

  // The feed gave every published event once, in the log's order. The
  // bank publishes all but the transfer's own steps (DeclarePublishedEvents
  // in example_app/bank_app.cc).
  std::vector<std::string> in_order, deposits;
  {
    pqxx::connection conn(schema.url());
    pqxx::nontransaction tx(conn);
    for (const auto& row : tx.exec(absl::StrCat(
             "SELECT event_id::text, event_type = 'MoneyDeposited' FROM ",
             schema.name(),
             ".events WHERE event_type NOT IN ('TransferDebited', "
             "'TransferCredited', 'TransferRefunded') ORDER BY "
             "transaction_id, global_position"))) {
      in_order.push_back(row[0].as<std::string>());
      if (row[1].as<bool>()) deposits.push_back(in_order.back());
    }
  }
  CHECK(cqrs::testing::Eventually(
      [&] { return feed.Count() >= in_order.size(); }, absl::Seconds(120)));
  {
    const std::vector<std::string> followed = feed.Ids();
    INFO(feed.Error());
    CHECK(feed.Error().empty());
    size_t first_difference = 0;
    while (first_difference < std::min(followed.size(), in_order.size()) &&
           followed[first_difference] == in_order[first_difference]) {
      ++first_difference;
    }
    INFO("the first difference is at " << first_difference);
    CHECK(followed.size() == in_order.size());
    CHECK(first_difference == in_order.size());
  }

  // The webhook endpoint got every deposit (at least once).
  size_t missing = 0;
  const std::set<std::string> wanted(deposits.begin(), deposits.end());
  CHECK(cqrs::testing::Eventually(
      [&] {
        const std::set<std::string> got = receiver.Ids();
        missing = 0;
        for (const std::string& id : wanted) missing += got.count(id) == 0;
        return missing == 0;
      },
      absl::Seconds(180), absl::Milliseconds(200)));
  say(absl::StrCat(in_order.size(), " published events in the log, ",
                   feed.Count(), " followed; ", wanted.size(), " deposits, ",
                   missing, " not delivered as webhooks, ", receiver.Posts(),
                   " webhook POSTs"));

  // Nothing parked, failed or stopped.
  {
    CliResult status = cli({"projections", "status", "--json"});
    REQUIRE(status.exit_code == 0);
    rapidjson::Document doc = Parse(status.output);
    REQUIRE(doc.IsArray());
    INFO(status.output);
    for (const auto& p : doc.GetArray()) {
      const std::string state = p["state"].GetString();
      CHECK(state != "failed");
      CHECK(state != "stopped");
      CHECK(p["parked"].GetInt64() == 0);
    }
  }

  // Resources: the samples, and main's after the warm-up.
  const std::vector<Sample> samples = sampler.Samples();
  {
    std::ofstream csv(output + "/samples.csv");
    csv << "seconds,process,pid,rss_kb,fds,threads,rss_anon_kb,rss_file_kb\n";
    for (const Sample& s : samples) {
      csv << static_cast<int64_t>(s.seconds) << "," << s.process << "," << s.pid
          << "," << s.rss_kb << "," << s.fds << "," << s.threads << ","
          << s.rss_anon_kb << "," << s.rss_file_kb << "\n";
    }
  }
  const double warm_up = std::min<double>(300, duration / 6.0);
  std::vector<Sample> after;
  for (const Sample& s : samples) {
    if (s.process == "main" && s.seconds >= warm_up) after.push_back(s);
  }
  REQUIRE(after.size() >= 2);
  int64_t fds_min = after[0].fds, fds_max = after[0].fds;
  int64_t rss_max = after[0].rss_kb;
  for (const Sample& s : after) {
    fds_min = std::min(fds_min, s.fds);
    fds_max = std::max(fds_max, s.fds);
    rss_max = std::max(rss_max, s.rss_kb);
  }
  say(absl::StrCat("main after ", static_cast<int64_t>(warm_up), " s: rss ",
                   after.front().rss_kb, " kB at first, ", after.back().rss_kb,
                   " kB at the end, ", rss_max, " kB at most (anonymous ",
                   after.front().rss_anon_kb, " then ",
                   after.back().rss_anon_kb, " kB); fds ", fds_min, "..",
                   fds_max, ", threads ", after.back().threads));
  // Descriptors come and go with connections (the clients', the database's
  // after a restart): a leak grows with every fault, by far more.
  CHECK(fds_max - fds_min <= 32);
  CHECK(after.back().rss_kb <= after.front().rss_kb * 3 / 2);
  std::ofstream(output + "/summary.txt") << summary.str();
}
