// Starts real PostgreSQL clusters in temporary directories under /tmp; each
// initdb takes a second or two, so the cases are few and each covers a
// whole lifecycle.
#include "framework/embedded_postgres.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>

#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "tests/support/wait.h"

namespace cqrs {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The postmaster's pid: the first line of pgdata/postmaster.pid, 0 if none.
pid_t PostmasterPid(const fs::path& data_dir) {
  std::string text = ReadFile(data_dir / "pgdata" / "postmaster.pid");
  int pid = 0;
  if (!absl::SimpleAtoi(text.substr(0, text.find('\n')), &pid)) return 0;
  return pid;
}

// Whether `pid` names a process that has not exited (zombies count as gone:
// this machine's init reaps late).
bool ProcessRunning(pid_t pid) {
  std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
  return stat[paren + 2] != 'Z' && stat[paren + 2] != 'X';
}

// A directory under /tmp, removed with whatever server was left in it.
class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/epg-test.XXXXXX";
    REQUIRE(mkdtemp(name) != nullptr);
    path_ = name;
    // Run as root, the server runs as an unprivileged user that must reach
    // the cluster inside.
    REQUIRE(chmod(name, 0755) == 0);
  }
  ~TempDir() {
    // Only after a failed test: SIGQUIT is PostgreSQL's immediate shutdown.
    std::error_code ec;
    for (fs::recursive_directory_iterator it(path_, ec), end; !ec && it != end;
         it.increment(ec)) {
      if (it->path().filename() == "postmaster.pid") {
        const fs::path pgdata = it->path().parent_path();
        const pid_t pid = PostmasterPid(pgdata.parent_path());
        // A server works in its data directory; anything else reuses a pid.
        std::error_code cwd_ec;
        const fs::path cwd =
            fs::read_symlink(absl::StrCat("/proc/", pid, "/cwd"), cwd_ec);
        if (pid > 0 && !cwd_ec && fs::equivalent(cwd, pgdata, cwd_ec) &&
            kill(pid, SIGQUIT) == 0) {
          // Removing files under a server still shutting down would fail.
          cqrs::testing::Eventually([&] { return !ProcessRunning(pid); },
                                    absl::Seconds(10), absl::Milliseconds(10));
        }
      }
    }
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::unique_ptr<EmbeddedPostgres> StartOrFail(const fs::path& data_dir) {
  EmbeddedPostgresOptions options;
  options.data_dir = data_dir.string();
  absl::StatusOr<std::unique_ptr<EmbeddedPostgres>> pg =
      EmbeddedPostgres::Start(std::move(options));
  INFO(pg.status().ToString());
  REQUIRE(pg.ok());
  return *std::move(pg);
}

std::string QueryValue(const std::string& conninfo, const std::string& sql) {
  pqxx::connection conn(conninfo);
  pqxx::nontransaction tx(conn);
  return tx.exec1(sql)[0].as<std::string>();
}

void Exec(const std::string& conninfo, const std::string& sql) {
  pqxx::connection conn(conninfo);
  pqxx::work tx(conn);
  tx.exec0(sql);
  tx.commit();
}

bool ServerAnswers(const std::string& conninfo) {
  try {
    pqxx::connection conn(conninfo);
    return conn.is_open();
  } catch (const pqxx::broken_connection&) {
    return false;
  }
}

TEST_CASE("a fresh directory gets a socket-only cluster whose data persists",
          "[embedded]") {
  TempDir tmp;
  const fs::path data_dir = tmp.path() / "bank-data";  // does not exist yet
  std::string conninfo;
  {
    std::unique_ptr<EmbeddedPostgres> pg = StartOrFail(data_dir);
    conninfo = pg->conninfo();
    CHECK(pg->owns_server());
    // Short path: the socket sits in the data directory itself.
    CHECK(absl::StrContains(conninfo,
                            absl::StrCat("host='", data_dir.string(), "'")));
    CHECK(fs::exists(data_dir / "EMBEDDED_POSTGRES"));
    CHECK(ReadFile(data_dir / "owner.pid") == absl::StrCat(getpid(), "\n"));
    CHECK(QueryValue(conninfo, "SELECT current_database()") == "bank");
    CHECK(QueryValue(conninfo, "SHOW listen_addresses").empty());
    CHECK(QueryValue(conninfo, "SHOW unix_socket_permissions") == "0700");
    CHECK(QueryValue(conninfo, "SHOW server_encoding") == "UTF8");
    CHECK((fs::status(data_dir).permissions() & fs::perms::others_all) ==
          fs::perms::none);
    Exec(conninfo, "CREATE TABLE kept (v text)");
    Exec(conninfo, "INSERT INTO kept VALUES ('across restarts')");

    absl::Status stopped = pg->Stop();
    INFO(stopped.ToString());
    REQUIRE(stopped.ok());
    CHECK_FALSE(ServerAnswers(conninfo));
    CHECK(PostmasterPid(data_dir) == 0);  // a clean shutdown removes it
  }

  std::unique_ptr<EmbeddedPostgres> again = StartOrFail(data_dir);
  CHECK(again->owns_server());
  CHECK(again->conninfo() == conninfo);
  CHECK(QueryValue(conninfo, "SELECT v FROM kept") == "across restarts");
}

TEST_CASE("a second instance attaches to the running server and leaves it up",
          "[embedded]") {
  TempDir tmp;
  const fs::path data_dir = tmp.path() / "bank-data";
  std::unique_ptr<EmbeddedPostgres> first = StartOrFail(data_dir);
  REQUIRE(first->owns_server());
  const pid_t server_pid = PostmasterPid(data_dir);
  REQUIRE(server_pid > 0);

  std::unique_ptr<EmbeddedPostgres> second = StartOrFail(data_dir);
  CHECK_FALSE(second->owns_server());
  CHECK(second->conninfo() == first->conninfo());
  Exec(second->conninfo(), "CREATE TABLE shared (v int)");
  CHECK(PostmasterPid(data_dir) == server_pid);  // not restarted
  CHECK(ReadFile(data_dir / "owner.pid") == absl::StrCat(getpid(), "\n"));

  absl::Status second_stopped = second->Stop();
  CHECK(second_stopped.ok());
  second.reset();
  CHECK(ServerAnswers(first->conninfo()));
  CHECK(QueryValue(first->conninfo(), "SELECT count(*) FROM shared") == "0");

  REQUIRE(first->Stop().ok());
  CHECK_FALSE(ServerAnswers(first->conninfo()));
}

TEST_CASE("a data directory too deep for a socket path gets its socket in /tmp",
          "[embedded]") {
  TempDir tmp;
  const fs::path data_dir =
      tmp.path() / std::string(100, 'd') / "bank-data";  // > 107 bytes
  std::string conninfo;
  {
    std::unique_ptr<EmbeddedPostgres> pg = StartOrFail(data_dir);
    conninfo = pg->conninfo();
    CHECK(absl::StrContains(conninfo, "host='/tmp/embedded-pg-"));
    CHECK(QueryValue(conninfo, "SELECT 1") == "1");
    // Another process computes the same socket directory.
    std::unique_ptr<EmbeddedPostgres> attached = StartOrFail(data_dir);
    CHECK_FALSE(attached->owns_server());
    CHECK(attached->conninfo() == conninfo);
  }
  CHECK_FALSE(ServerAnswers(conninfo));
}

TEST_CASE("a data directory with a comma in its path works", "[embedded]") {
  TempDir tmp;
  // unix_socket_directories is a comma-separated list: before the fix the
  // server took "<tmp>/a" and "b/bank-data" for two directories and did not
  // start (or put its socket in <tmp>/a when that existed).
  const fs::path data_dir = tmp.path() / "a,b" / "bank-data";
  fs::create_directories(tmp.path() / "a");
  std::unique_ptr<EmbeddedPostgres> pg = StartOrFail(data_dir);
  // libpq's host= cannot hold a comma either: the socket goes to /tmp.
  CHECK(absl::StrContains(pg->conninfo(), "host='/tmp/embedded-pg-"));
  CHECK(QueryValue(pg->conninfo(), "SELECT 1") == "1");
  CHECK(fs::is_empty(tmp.path() / "a"));
  REQUIRE(pg->Stop().ok());
}

TEST_CASE("a postmaster killed with SIGKILL is recovered by the next start",
          "[embedded]") {
  TempDir tmp;
  const fs::path data_dir = tmp.path() / "bank-data";
  std::unique_ptr<EmbeddedPostgres> pg = StartOrFail(data_dir);
  Exec(pg->conninfo(), "CREATE TABLE survivor (v text)");
  Exec(pg->conninfo(), "INSERT INTO survivor VALUES ('committed')");
  const pid_t killed = PostmasterPid(data_dir);
  REQUIRE(killed > 0);
  REQUIRE(kill(killed, SIGKILL) == 0);
  REQUIRE(cqrs::testing::Eventually([&] { return !ProcessRunning(killed); },
                                    absl::Seconds(30), absl::Milliseconds(10)));
  // postmaster.pid, the socket lock file and the shared memory it left
  // behind are what the next start has to cope with.
  REQUIRE(PostmasterPid(data_dir) == killed);

  // The owner finds nothing to stop.
  absl::Status stopped = pg->Stop();
  INFO(stopped.ToString());
  CHECK(stopped.ok());
  pg.reset();

  std::unique_ptr<EmbeddedPostgres> restarted = StartOrFail(data_dir);
  CHECK(restarted->owns_server());
  CHECK(PostmasterPid(data_dir) != killed);
  CHECK(QueryValue(restarted->conninfo(), "SELECT v FROM survivor") ==
        "committed");
}

TEST_CASE("a server whose owner process died is adopted and stopped",
          "[embedded]") {
  TempDir tmp;
  const fs::path data_dir = tmp.path() / "bank-data";
  // A child process starts the server and exits without stopping it, as a
  // `bank serve` killed with SIGKILL would.
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    EmbeddedPostgresOptions options;
    options.data_dir = data_dir.string();
    auto pg = EmbeddedPostgres::Start(std::move(options));
    _exit(pg.ok() && (*pg)->owns_server() ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  const pid_t server_pid = PostmasterPid(data_dir);
  REQUIRE(server_pid > 0);
  CHECK(ReadFile(data_dir / "owner.pid") == absl::StrCat(child, "\n"));

  std::unique_ptr<EmbeddedPostgres> pg = StartOrFail(data_dir);
  CHECK(pg->owns_server());
  CHECK(PostmasterPid(data_dir) == server_pid);  // adopted, not restarted
  CHECK(ReadFile(data_dir / "owner.pid") == absl::StrCat(getpid(), "\n"));
  REQUIRE(ServerAnswers(pg->conninfo()));

  REQUIRE(pg->Stop().ok());
  CHECK_FALSE(ServerAnswers(pg->conninfo()));
  // pg_ctl stop -w returns once the server has removed its pid file.
  CHECK(PostmasterPid(data_dir) == 0);
}

TEST_CASE("unusable data directories and binaries give actionable errors",
          "[embedded]") {
  TempDir tmp;

  SECTION("a non-empty directory that is not ours") {
    const fs::path foreign = tmp.path() / "photos";
    fs::create_directories(foreign);
    std::ofstream(foreign / "holiday.jpg") << "not a cluster";
    EmbeddedPostgresOptions options;
    options.data_dir = foreign.string();
    auto pg = EmbeddedPostgres::Start(options);
    REQUIRE_FALSE(pg.ok());
    CHECK(pg.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK(absl::StrContains(pg.status().message(), foreign.string()));
    CHECK(absl::StrContains(pg.status().message(),
                            "is not a PostgreSQL cluster created by"));
    CHECK(fs::exists(foreign / "holiday.jpg"));
    CHECK_FALSE(fs::exists(foreign / "EMBEDDED_POSTGRES"));
  }

  SECTION("no server binaries") {
    EmbeddedPostgresOptions options;
    options.data_dir = (tmp.path() / "bank-data").string();
    options.bin_dir = tmp.path().string();
    auto pg = EmbeddedPostgres::Start(options);
    REQUIRE_FALSE(pg.ok());
    CHECK(pg.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK(
        absl::StrContains(pg.status().message(), "apt-get install postgresql"));
    CHECK_FALSE(fs::exists(options.data_dir));  // nothing left behind
  }

  SECTION("as root, a directory the server's user cannot reach") {
    if (geteuid() != 0) return;  // only root hands the cluster to another user
    REQUIRE(chmod(tmp.path().c_str(), 0700) == 0);
    EmbeddedPostgresOptions options;
    options.data_dir = (tmp.path() / "bank-data").string();
    auto pg = EmbeddedPostgres::Start(options);
    REQUIRE_FALSE(pg.ok());
    CHECK(pg.status().code() == absl::StatusCode::kPermissionDenied);
    CHECK(absl::StrContains(pg.status().message(), "cannot reach"));
    CHECK(absl::StrContains(pg.status().message(), options.data_dir));
  }

  SECTION("a database name PostgreSQL cannot hold") {
    EmbeddedPostgresOptions options;
    options.data_dir = (tmp.path() / "bank-data").string();
    options.database = std::string(64, 'x');
    auto pg = EmbeddedPostgres::Start(options);
    REQUIRE_FALSE(pg.ok());
    CHECK(pg.status().code() == absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace cqrs
