#include "framework/embedded_postgres.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <pqxx/pqxx>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "framework/internal/subprocess.h"
#include "framework/status_macros.h"

namespace fs = std::filesystem;

namespace framework_internal {

// The OS user the server runs as.
struct ServerUser {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  // Set when this process is root: commands then run through
  // `runuser -u name --`, since PostgreSQL refuses to run as root.
  std::string runuser;
};

// Everything Stop() needs, fixed by Start().
struct EmbeddedCluster {
  fs::path data_dir;  // canonical
  fs::path pgdata;
  fs::path socket_dir;
  fs::path bin_dir;
  ServerUser user;
  absl::Duration timeout;

  fs::path socket_path() const { return socket_dir / ".s.PGSQL.5432"; }
  fs::path server_log() const { return data_dir / "server.log"; }
  fs::path tools_log() const { return data_dir / "tools.log"; }
  fs::path start_lock() const { return data_dir / "start.lock"; }
  fs::path owner_file() const { return data_dir / "owner.pid"; }
  fs::path pg_ctl() const { return bin_dir / "pg_ctl"; }
};

}  // namespace framework_internal

namespace cqrs {
namespace {

using framework_internal::EmbeddedCluster;
using framework_internal::ServerUser;

constexpr char kMarkerFile[] = "EMBEDDED_POSTGRES";
constexpr char kMarkerText[] =
    "This directory holds a private PostgreSQL cluster created by\n"
    "cqrs::EmbeddedPostgres (framework/embedded_postgres.h). Delete the\n"
    "whole directory to start afresh; do not edit it by hand.\n";
constexpr char kClusterDir[] = "pgdata";
constexpr char kNewClusterDir[] = "pgdata.new";
constexpr char kServerConf[] = "embedded_postgres.conf";
constexpr char kSuperuser[] = "postgres";
constexpr int kPort = 5432;
// sizeof(sockaddr_un::sun_path) minus the terminating NUL.
constexpr size_t kMaxSocketPath = 107;
constexpr size_t kSocketNameLength = sizeof("/.s.PGSQL.5432") - 1;
constexpr absl::string_view kInstallHint =
    "install them with `apt-get install postgresql`";

// Closes the descriptor it holds; for locks that live as long as the fd.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    Reset();
    fd_ = std::exchange(other.fd_, -1);
    return *this;
  }
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() { return std::exchange(fd_, -1); }
  void Reset() {
    if (fd_ >= 0) close(std::exchange(fd_, -1));
  }

 private:
  int fd_;
};

bool IsRoot() { return geteuid() == 0; }

absl::Status StatusFromErrno(int error, absl::string_view what) {
  std::string message = absl::StrCat(what, ": ", std::strerror(error));
  switch (error) {
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(message);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status StatusFromErrorCode(const std::error_code& ec,
                                 absl::string_view what) {
  if (ec.category() == std::generic_category() ||
      ec.category() == std::system_category()) {
    return StatusFromErrno(ec.value(), what);
  }
  return absl::InternalError(absl::StrCat(what, ": ", ec.message()));
}

std::string ReadFile(const fs::path& path, uintmax_t offset = 0) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(static_cast<std::streamoff>(offset));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

uintmax_t FileSize(const fs::path& path) {
  std::error_code ec;
  uintmax_t size = fs::file_size(path, ec);
  return ec ? 0 : size;
}

// Collapses a multi-line message (libpqxx's, PostgreSQL's) into one line.
std::string OneLine(absl::string_view text) {
  std::vector<absl::string_view> lines =
      absl::StrSplit(text, absl::ByAnyChar("\r\n"), absl::SkipWhitespace());
  for (absl::string_view& line : lines) line = absl::StripAsciiWhitespace(line);
  return absl::StrJoin(lines, " ");
}

// The last few non-blank lines of a program's output or a log, joined into
// one line for an error message.
std::string Tail(absl::string_view text) {
  constexpr size_t kMaxLines = 3;
  constexpr size_t kMaxChars = 400;
  std::vector<absl::string_view> lines;
  for (absl::string_view line :
       absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    lines.push_back(absl::StripAsciiWhitespace(line));
  }
  if (lines.size() > kMaxLines) {
    lines.erase(lines.begin(), lines.end() - kMaxLines);
  }
  std::string tail = absl::StrJoin(lines, " | ");
  if (tail.size() > kMaxChars) {
    tail = absl::StrCat("...", tail.substr(tail.size() - kMaxChars));
  }
  return tail.empty() ? "(no output)" : tail;
}

absl::Status WriteFileAtomically(const fs::path& path, absl::string_view text,
                                 const ServerUser& owner) {
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) {
      return StatusFromErrno(errno,
                             absl::StrCat("cannot write ", tmp.string()));
    }
  }
  if (IsRoot() && lchown(tmp.c_str(), owner.uid, owner.gid) != 0) {
    return StatusFromErrno(errno, absl::StrCat("cannot chown ", tmp.string()));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    return StatusFromErrno(errno, absl::StrCat("cannot rename ", tmp.string()));
  }
  return absl::OkStatus();
}

absl::Status AppendToFile(const fs::path& path, absl::string_view text) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    return StatusFromErrno(errno, absl::StrCat("cannot open ", path.string()));
  }
  UniqueFd closer(fd);
  while (!text.empty()) {
    ssize_t n = write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return StatusFromErrno(errno,
                             absl::StrCat("cannot write ", path.string()));
    }
    text.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

bool IsExecutableFile(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec) && access(path.c_str(), X_OK) == 0;
}

// The first of `candidates` that is executable, else `name` looked up on
// PATH; empty when neither exists.
fs::path FindProgram(absl::string_view name,
                     std::initializer_list<const char*> candidates) {
  for (const char* candidate : candidates) {
    if (IsExecutableFile(candidate)) return candidate;
  }
  const char* path = std::getenv("PATH");
  if (path == nullptr) return {};
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    fs::path program = fs::path(std::string(dir)) / std::string(name);
    if (IsExecutableFile(program)) return program;
  }
  return {};
}

bool HasServerBinaries(const fs::path& dir) {
  return IsExecutableFile(dir / "initdb") && IsExecutableFile(dir / "pg_ctl") &&
         IsExecutableFile(dir / "postgres");
}

// Debian installs each major version in /usr/lib/postgresql/<version>/bin.
// An existing cluster needs its own major version; a new one gets the
// highest installed.
absl::StatusOr<fs::path> FindBinDir(const std::string& bin_dir,
                                    const fs::path& pgdata) {
  if (!bin_dir.empty()) {
    if (HasServerBinaries(bin_dir)) return fs::path(bin_dir);
    return absl::FailedPreconditionError(absl::StrCat(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) in ", bin_dir,
        ": ", kInstallHint));
  }
  const fs::path debian_root = "/usr/lib/postgresql";
  std::string version(
      absl::StripAsciiWhitespace(ReadFile(pgdata / "PG_VERSION")));
  if (!version.empty() && HasServerBinaries(debian_root / version / "bin")) {
    return debian_root / version / "bin";
  }
  fs::path best;
  double best_version = -1;
  std::error_code ec;
  for (fs::directory_iterator it(debian_root, ec), end; !ec && it != end;
       it.increment(ec)) {
    double v = 0;
    if (!absl::SimpleAtod(it->path().filename().string(), &v)) continue;
    if (v > best_version && HasServerBinaries(it->path() / "bin")) {
      best_version = v;
      best = it->path() / "bin";
    }
  }
  if (!best.empty()) return best;
  fs::path pg_ctl = FindProgram("pg_ctl", {});
  if (!pg_ctl.empty() && HasServerBinaries(pg_ctl.parent_path())) {
    return pg_ctl.parent_path();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in ",
      debian_root.string(), "/*/bin or on PATH: ", kInstallHint));
}

bool LookupUser(const char* name, uid_t uid, ServerUser* user) {
  struct passwd entry;
  struct passwd* found = nullptr;
  std::vector<char> buffer(16384);
  int rc = name != nullptr
               ? getpwnam_r(name, &entry, buffer.data(), buffer.size(), &found)
               : getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found);
  if (rc != 0 || found == nullptr) return false;
  user->name = entry.pw_name;
  user->uid = entry.pw_uid;
  user->gid = entry.pw_gid;
  return true;
}

std::string UserName(uid_t uid) {
  ServerUser user;
  return LookupUser(nullptr, uid, &user) ? absl::StrCat("'", user.name, "'")
                                         : absl::StrCat("uid ", uid);
}

// pg_ctl runs the server through `sh -c` with paths in double quotes, so
// these characters would be interpreted by the shell.
absl::Status CheckPathForPgCtl(const fs::path& path) {
  if (path.native().find_first_of("\"$`\\\n\r") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data directory path ", path.string(),
        " contains one of \" $ ` \\ or a line break, which pg_ctl cannot pass "
        "through its shell: choose another path"));
  }
  return absl::OkStatus();
}

absl::StatusOr<fs::path> AbsoluteDataDir(const std::string& data_dir) {
  std::error_code ec;
  fs::path dir = fs::absolute(data_dir, ec).lexically_normal();
  if (ec) {
    return StatusFromErrorCode(ec, "cannot resolve the data directory path");
  }
  if (!dir.has_filename()) dir = dir.parent_path();  // a trailing slash
  RETURN_IF_ERROR(CheckPathForPgCtl(dir));
  return dir;
}

// Creates `dir` if needed and makes sure it is ours: marked, or empty (a
// fresh file system's lost+found aside), in which case it marks it. Returns
// its canonical path.
absl::StatusOr<fs::path> ClaimDataDir(fs::path dir) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data directory ", dir.string(), " exists but is not a directory"));
  }
  fs::create_directories(dir, ec);
  if (ec) {
    return StatusFromErrorCode(
        ec, absl::StrCat("cannot create data directory ", dir.string()));
  }
  dir = fs::canonical(dir, ec);
  if (ec) {
    return StatusFromErrorCode(
        ec, absl::StrCat("cannot resolve data directory ", dir.string()));
  }
  RETURN_IF_ERROR(CheckPathForPgCtl(dir));
  if (fs::exists(dir / kMarkerFile, ec)) return dir;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->path().filename() == "lost+found") continue;
    return absl::FailedPreconditionError(absl::StrCat(
        "data directory ", dir.string(),
        " is not a PostgreSQL cluster created by this program (it has no ",
        kMarkerFile, " file) and is not empty: use a new or empty directory"));
  }
  if (ec) {
    absl::Status status = StatusFromErrorCode(
        ec, absl::StrCat("cannot list data directory ", dir.string()));
    struct stat st;
    if (absl::IsPermissionDenied(status) && stat(dir.c_str(), &st) == 0) {
      return absl::PermissionDeniedError(
          absl::StrCat(status.message(), " (it belongs to ",
                       UserName(st.st_uid), "): run as that user or as root"));
    }
    return status;
  }
  std::ofstream marker(dir / kMarkerFile, std::ios::trunc);
  marker << kMarkerText;
  marker.close();
  if (!marker) {
    return StatusFromErrno(
        errno, absl::StrCat("cannot write to data directory ", dir.string()));
  }
  return dir;
}

struct ToolResult {
  int exit_status = 0;
  std::string output;  // what the program printed
};

// Runs a program with its output appended to tools.log, after a line naming
// the command.
absl::StatusOr<ToolResult> RunLogged(const EmbeddedCluster& cluster,
                                     std::vector<std::string> argv) {
  RETURN_IF_ERROR(AppendToFile(
      cluster.tools_log(),
      absl::StrCat("\n== ",
                   absl::FormatTime("%Y-%m-%d %H:%M:%S %z", absl::Now(),
                                    absl::LocalTimeZone()),
                   " ", absl::StrJoin(argv, " "), "\n")));
  const uintmax_t offset = FileSize(cluster.tools_log());
  framework_internal::SubprocessOptions options;
  options.argv = std::move(argv);
  options.output_path = cluster.tools_log().string();
  ToolResult result;
  ASSIGN_OR_RETURN(result.exit_status,
                   framework_internal::RunSubprocess(options));
  result.output = ReadFile(cluster.tools_log(), offset);
  return result;
}

// Runs a PostgreSQL program as the server's user.
absl::StatusOr<ToolResult> RunAsServerUser(const EmbeddedCluster& cluster,
                                           std::vector<std::string> argv) {
  if (!cluster.user.runuser.empty()) {
    argv.insert(argv.begin(),
                {cluster.user.runuser, "-u", cluster.user.name, "--"});
  }
  return RunLogged(cluster, std::move(argv));
}

// The current user; as root, the owner of an existing cluster or else
// 'postgres', created as a system user when missing (as scripts/lib-pg.sh).
absl::StatusOr<ServerUser> ResolveServerUser(const EmbeddedCluster& cluster) {
  struct stat cluster_stat;
  const bool cluster_exists = stat(cluster.pgdata.c_str(), &cluster_stat) == 0;
  ServerUser user;
  if (!IsRoot()) {
    if (!LookupUser(nullptr, geteuid(), &user)) {
      user.name = absl::StrCat("uid ", geteuid());
      user.uid = geteuid();
      user.gid = getegid();
    }
    if (cluster_exists && cluster_stat.st_uid != user.uid) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the cluster in ", cluster.pgdata.string(), " belongs to ",
          UserName(cluster_stat.st_uid), " but this process runs as '",
          user.name,
          "', and PostgreSQL must run as the owner of its data: run as that "
          "user or `chown -R ",
          user.name, " ", cluster.data_dir.string(), "`"));
    }
    return user;
  }

  user.runuser = FindProgram("runuser", {"/usr/sbin/runuser", "/sbin/runuser"});
  if (user.runuser.empty()) {
    return absl::FailedPreconditionError(
        "running as root, the PostgreSQL server must run as an unprivileged "
        "user, which needs runuser: install it with `apt-get install "
        "util-linux`");
  }
  if (cluster_exists) {
    if (cluster_stat.st_uid == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the cluster in ", cluster.pgdata.string(),
          " is owned by root, and PostgreSQL refuses to run as root: `chown "
          "-R postgres ",
          cluster.data_dir.string(), "`"));
    }
    if (!LookupUser(nullptr, cluster_stat.st_uid, &user)) {
      return absl::FailedPreconditionError(
          absl::StrCat("the cluster in ", cluster.pgdata.string(),
                       " is owned by uid ", cluster_stat.st_uid,
                       ", which has no user account: `chown -R postgres ",
                       cluster.data_dir.string(), "`"));
    }
    return user;
  }
  if (LookupUser(kSuperuser, 0, &user)) return user;

  fs::path useradd =
      FindProgram("useradd", {"/usr/sbin/useradd", "/sbin/useradd"});
  if (useradd.empty()) {
    return absl::FailedPreconditionError(
        "running as root, the PostgreSQL server must run as an unprivileged "
        "user, but there is no user 'postgres' and no useradd to create it: "
        "create the user");
  }
  // Another process may create the user at the same time; only the outcome
  // counts.
  ASSIGN_OR_RETURN(
      ToolResult useradd_result,
      RunLogged(cluster, {useradd.string(), "--system", "--no-create-home",
                          "--shell", "/usr/sbin/nologin", kSuperuser}));
  if (LookupUser(kSuperuser, 0, &user)) return user;
  return absl::FailedPreconditionError(absl::StrCat(
      "running as root, the PostgreSQL server must run as an unprivileged "
      "user, but creating the system user 'postgres' failed (exit ",
      useradd_result.exit_status, "): ", Tail(useradd_result.output)));
}

absl::Status ChownToServerUser(const EmbeddedCluster& cluster,
                               const fs::path& path) {
  if (!IsRoot()) return absl::OkStatus();
  if (lchown(path.c_str(), cluster.user.uid, cluster.user.gid) != 0 &&
      errno != ENOENT) {
    return StatusFromErrno(errno, absl::StrCat("cannot chown ", path.string()));
  }
  return absl::OkStatus();
}

// Gives the data directory to the server's user (who writes its log and,
// by default, its socket there) and closes it to everyone else.
absl::Status HandOverDataDir(const EmbeddedCluster& cluster) {
  for (const fs::path& path : {cluster.data_dir, cluster.data_dir / kMarkerFile,
                               cluster.tools_log()}) {
    RETURN_IF_ERROR(ChownToServerUser(cluster, path));
  }
  struct stat st;
  if (stat(cluster.data_dir.c_str(), &st) == 0 &&
      (IsRoot() || st.st_uid == geteuid()) &&
      chmod(cluster.data_dir.c_str(), 0700) != 0) {
    return StatusFromErrno(
        errno, absl::StrCat("cannot chmod ", cluster.data_dir.string()));
  }
  if (!IsRoot()) return absl::OkStatus();

  // As root every access check passes for this process; test the one the
  // server will make, through the directories above data_dir.
  fs::path test = FindProgram("test", {"/usr/bin/test", "/bin/test"});
  if (test.empty()) return absl::OkStatus();
  const std::string dir = cluster.data_dir.string();
  ASSIGN_OR_RETURN(
      ToolResult result,
      RunAsServerUser(cluster, {test.string(), "-w", dir, "-a", "-x", dir}));
  if (result.exit_status == 0) return absl::OkStatus();
  // `test` prints nothing; anything else comes from runuser.
  const bool silent = absl::StripAsciiWhitespace(result.output).empty();
  return absl::PermissionDeniedError(absl::StrCat(
      "PostgreSQL refuses to run as root, so its server runs as user '",
      cluster.user.name, "', which cannot reach ", dir,
      ": choose a data directory that user can reach (not under a private "
      "home such as /root) or open the directories above it (chmod o+x)",
      silent ? "" : absl::StrCat(" [", Tail(result.output), "]")));
}

// A Unix socket address holds at most 107 bytes, so a deep data directory
// gets its socket in /tmp, under a name derived from the directory so that
// every process computes the same one. /tmp rather than $TMPDIR, which may
// differ between processes. So does a directory with a comma in its path:
// libpq's host= is a comma-separated list, which no quoting escapes.
fs::path SocketDirFor(const fs::path& data_dir) {
  if (data_dir.native().size() + kSocketNameLength <= kMaxSocketPath &&
      data_dir.native().find(',') == std::string::npos) {
    return data_dir;
  }
  uint64_t hash = 14695981039346656037ull;  // FNV-1a: stable across builds
  for (unsigned char c : data_dir.native()) {
    hash = (hash ^ c) * 1099511628211ull;
  }
  char name[64];
  std::snprintf(name, sizeof(name), "embedded-pg-%016llx",
                static_cast<unsigned long long>(hash));
  return fs::path("/tmp") / name;
}

// A socket directory of its own in /tmp must belong to the server's user:
// one planted by someone else would let them see or hijack the socket.
absl::Status PrepareSocketDir(const EmbeddedCluster& cluster) {
  if (cluster.socket_dir == cluster.data_dir) return absl::OkStatus();
  const char* dir = cluster.socket_dir.c_str();
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    return StatusFromErrno(
        errno, absl::StrCat("cannot create socket directory ", dir));
  }
  struct stat st;
  if (lstat(dir, &st) != 0) {
    return StatusFromErrno(errno, absl::StrCat("cannot stat ", dir));
  }
  if (!S_ISDIR(st.st_mode) ||
      (st.st_uid != cluster.user.uid && !(IsRoot() && st.st_uid == 0))) {
    return absl::FailedPreconditionError(absl::StrCat(
        "socket directory ", dir, " for data directory ",
        cluster.data_dir.string(), " is not a directory owned by '",
        cluster.user.name, "': remove it"));
  }
  RETURN_IF_ERROR(ChownToServerUser(cluster, cluster.socket_dir));
  if (chmod(dir, 0700) != 0) {
    return StatusFromErrno(errno, absl::StrCat("cannot chmod ", dir));
  }
  return absl::OkStatus();
}

// Quotes a libpq key=value value.
std::string QuoteConninfo(absl::string_view value) {
  std::string quoted = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') quoted += '\\';
    quoted += c;
  }
  quoted += '\'';
  return quoted;
}

std::string Conninfo(const EmbeddedCluster& cluster,
                     absl::string_view database) {
  return absl::StrCat("host=", QuoteConninfo(cluster.socket_dir.string()),
                      " port=", kPort, " user=", kSuperuser,
                      " dbname=", QuoteConninfo(database));
}

// Quotes a postgresql.conf string value.
std::string QuoteConf(absl::string_view value) {
  std::string quoted = "'";
  for (char c : value) {
    if (c == '\'') quoted += '\'';
    if (c == '\\') quoted += '\\';
    quoted += c;
  }
  quoted += '\'';
  return quoted;
}

// `dir` as one element of a comma-separated list setting such as
// unix_socket_directories: in double quotes, with quotes doubled, so that a
// comma in the path does not split it into two directories.
std::string ListElement(const std::string& dir) {
  return absl::StrCat("\"", absl::StrReplaceAll(dir, {{"\"", "\"\""}}), "\"");
}

// Rewritten before every start, so a moved data directory gets its new
// socket directory. postgresql.conf `include`s it (not include_if_exists):
// without it the server would fall back to listening on localhost TCP.
absl::Status WriteServerConf(const EmbeddedCluster& cluster) {
  std::string conf = absl::StrCat(
      "# Written by cqrs::EmbeddedPostgres before every start; edits are "
      "lost.\n",
      "listen_addresses = ''\n", "port = ", kPort, "\n",
      "unix_socket_directories = ",
      QuoteConf(ListElement(cluster.socket_dir.string())), "\n",
      "unix_socket_permissions = 0700\n");
  return WriteFileAtomically(cluster.pgdata / kServerConf, conf, cluster.user);
}

// initdb writes to a scratch directory renamed into place on success, so a
// run that dies half-way leaves nothing a later Start() mistakes for a
// cluster.
absl::Status InitCluster(const EmbeddedCluster& cluster) {
  const fs::path fresh = cluster.data_dir / kNewClusterDir;
  std::error_code ec;
  fs::remove_all(fresh, ec);
  if (ec) {
    return StatusFromErrorCode(
        ec, absl::StrCat("cannot remove the leftover ", fresh.string()));
  }
  ASSIGN_OR_RETURN(
      ToolResult initdb,
      RunAsServerUser(cluster, {(cluster.bin_dir / "initdb").string(), "-D",
                                fresh.string(), "-U", kSuperuser, "-E", "UTF8",
                                "--locale=C.UTF-8", "--auth-local=trust",
                                "--auth-host=reject", "--no-instructions"}));
  if (initdb.exit_status != 0) {
    return absl::InternalError(absl::StrCat(
        "initdb could not create a PostgreSQL cluster in ", fresh.string(),
        " (exit ", initdb.exit_status, "): ", Tail(initdb.output),
        " (full output in ", cluster.tools_log().string(), ")"));
  }
  RETURN_IF_ERROR(AppendToFile(
      fresh / "postgresql.conf",
      absl::StrCat("\n# Socket-only access, set by cqrs::EmbeddedPostgres.\n"
                   "include '",
                   kServerConf, "'\n")));
  if (rename(fresh.c_str(), cluster.pgdata.c_str()) != 0) {
    return StatusFromErrno(
        errno, absl::StrCat("cannot rename ", fresh.string(), " to ",
                            cluster.pgdata.string()));
  }
  return absl::OkStatus();
}

// Opens (creating) a lock file; no lock taken yet.
absl::StatusOr<UniqueFd> OpenLockFile(const EmbeddedCluster& cluster,
                                      const fs::path& path) {
  // O_CLOEXEC: a child that outlived us (the server) must not keep the lock.
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    return StatusFromErrno(errno, absl::StrCat("cannot open ", path.string()));
  }
  if (IsRoot() && fchown(fd.get(), cluster.user.uid, cluster.user.gid) != 0) {
    return StatusFromErrno(errno, absl::StrCat("cannot chown ", path.string()));
  }
  return fd;
}

// start.lock serializes Start() and Stop() of all processes on a directory,
// so nobody sees a server half-way through starting or stopping.
absl::StatusOr<UniqueFd> LockStartLock(const EmbeddedCluster& cluster,
                                       absl::Time deadline) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenLockFile(cluster, cluster.start_lock()));
  while (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) {
      return StatusFromErrno(
          errno, absl::StrCat("cannot lock ", cluster.start_lock().string()));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "another process is still starting or stopping PostgreSQL in ",
          cluster.data_dir.string(), " (it holds ",
          cluster.start_lock().string(), "); gave up after ",
          absl::FormatDuration(cluster.timeout)));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return fd;
}

// The owner of a running server holds an exclusive flock on owner.pid for
// as long as it lives; the kernel drops it when the process dies, however
// it dies, so a free lock means nobody will stop the server. Returns an
// invalid fd when a live process holds it.
absl::StatusOr<UniqueFd> TryTakeOwnership(const EmbeddedCluster& cluster) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenLockFile(cluster, cluster.owner_file()));
  while (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return UniqueFd();
    return StatusFromErrno(
        errno, absl::StrCat("cannot lock ", cluster.owner_file().string()));
  }
  return fd;
}

// Records our pid for people and tools; the lock is what counts.
absl::Status RecordOwner(const EmbeddedCluster& cluster, int fd) {
  std::string pid = absl::StrCat(getpid(), "\n");
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) !=
                                   static_cast<ssize_t>(pid.size())) {
    return StatusFromErrno(
        errno, absl::StrCat("cannot write ", cluster.owner_file().string()));
  }
  return absl::OkStatus();
}

bool SocketAccepts(const fs::path& socket_path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.native().size() >= sizeof(address.sun_path)) return false;
  std::memcpy(address.sun_path, socket_path.c_str(),
              socket_path.native().size());
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return false;
  // PostgreSQL logs nothing for a connection closed before any byte.
  int rc;
  do {
    rc = connect(fd.get(), reinterpret_cast<const sockaddr*>(&address),
                 sizeof(address));
  } while (rc != 0 && errno == EINTR);
  return rc == 0;
}

// First line of a PostgreSQL lock file: the pid of the postmaster.
pid_t ReadLockFilePid(const fs::path& path) {
  std::string text = ReadFile(path);
  int pid = 0;
  if (!absl::SimpleAtoi(text.substr(0, text.find('\n')), &pid)) return 0;
  return pid;
}

// Whether `pid` is a running process of the server of `pgdata`: every
// PostgreSQL server process works in its data directory. A zombie is not
// running: this machine's init may be slow to reap a killed postmaster, and
// PostgreSQL would take the zombie for a live server. Nor is an unrelated
// process that reuses the pid after a reboot.
bool IsServerProcess(pid_t pid, const fs::path& pgdata) {
  if (pid <= 0) return false;
  const std::string proc = absl::StrCat("/proc/", pid);
  std::string stat = ReadFile(proc + "/stat");
  if (stat.empty()) return false;
  size_t paren = stat.rfind(')');
  if (paren != std::string::npos && paren + 2 < stat.size() &&
      (stat[paren + 2] == 'Z' || stat[paren + 2] == 'X')) {
    return false;
  }
  std::error_code ec;
  fs::path cwd = fs::read_symlink(proc + "/cwd", ec);
  // Another user's process we may not inspect: assume the worst.
  if (ec) return ec != std::errc::no_such_file_or_directory;
  return fs::equivalent(cwd, pgdata, ec);
}

bool PostmasterAlive(const EmbeddedCluster& cluster) {
  return IsServerProcess(ReadLockFilePid(cluster.pgdata / "postmaster.pid"),
                         cluster.pgdata);
}

bool ServerRunning(const EmbeddedCluster& cluster) {
  return SocketAccepts(cluster.socket_path()) || PostmasterAlive(cluster);
}

// After a crash or a reboot the lock files may name a pid that is dead, a
// zombie, or reused by an unrelated process; PostgreSQL only copes with the
// first, so remove them when their pid is not a process of this server.
// Called with start.lock held and no server answering on the socket.
void RemoveStaleLockFiles(const EmbeddedCluster& cluster) {
  for (const fs::path& lock_file :
       {cluster.pgdata / "postmaster.pid",
        fs::path(cluster.socket_path().string() + ".lock")}) {
    pid_t pid = ReadLockFilePid(lock_file);
    if (pid > 0 && !IsServerProcess(pid, cluster.pgdata)) {
      unlink(lock_file.c_str());
    }
  }
}

int SecondsLeft(absl::Time deadline) {
  return static_cast<int>(
      std::max<int64_t>(1, absl::ToInt64Seconds(deadline - absl::Now())));
}

absl::Status StopServer(const EmbeddedCluster& cluster, absl::Time deadline,
                        const char* mode) {
  if (!ServerRunning(cluster)) return absl::OkStatus();
  ASSIGN_OR_RETURN(
      ToolResult pg_ctl,
      RunAsServerUser(cluster, {cluster.pg_ctl().string(), "stop", "-D",
                                cluster.pgdata.string(), "-m", mode, "-w", "-t",
                                std::to_string(SecondsLeft(deadline)), "-s"}));
  // pg_ctl also fails when the server died on its own meanwhile.
  if (pg_ctl.exit_status == 0 || !ServerRunning(cluster)) {
    return absl::OkStatus();
  }
  std::string message =
      absl::StrCat("stopping PostgreSQL in ", cluster.pgdata.string(),
                   " failed: ", Tail(pg_ctl.output), " (see ",
                   cluster.server_log().string(), ")");
  if (absl::StrContains(pg_ctl.output, "does not shut down")) {
    return absl::DeadlineExceededError(message);
  }
  return absl::InternalError(message);
}

absl::Status StartServer(const EmbeddedCluster& cluster, absl::Time deadline) {
  for (;;) {
    RemoveStaleLockFiles(cluster);
    uintmax_t log_offset = FileSize(cluster.server_log());
    ASSIGN_OR_RETURN(
        ToolResult pg_ctl,
        RunAsServerUser(
            cluster,
            {cluster.pg_ctl().string(), "start", "-D", cluster.pgdata.string(),
             "-l", cluster.server_log().string(), "-w", "-t",
             std::to_string(SecondsLeft(deadline)), "-s"}));
    if (pg_ctl.exit_status == 0) return absl::OkStatus();

    // Processes of a killed server keep its shared memory attached until
    // they notice and exit, which takes a moment.
    std::string log = ReadFile(cluster.server_log(), log_offset);
    if (absl::StrContains(log, "pre-existing shared memory block") &&
        absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(200));
      continue;
    }
    const bool timed_out =
        absl::StrContains(pg_ctl.output, "did not start in time");
    // Our server, still starting when pg_ctl gave up, would linger unowned.
    if (timed_out) {
      StopServer(cluster, absl::Now() + absl::Seconds(10), "immediate")
          .IgnoreError();
    }
    std::string message = absl::StrCat(
        "PostgreSQL in ", cluster.pgdata.string(),
        " did not start: ", Tail(log.empty() ? pg_ctl.output : log), " (see ",
        cluster.server_log().string(), ")");
    if (timed_out) return absl::DeadlineExceededError(message);
    return absl::InternalError(message);
  }
}

// Waits until the server accepts sessions, makes sure it is the server of
// this cluster (and not whatever else might listen on that socket), and
// creates `database` when missing.
absl::Status PrepareDatabase(const EmbeddedCluster& cluster,
                             const std::string& database, absl::Time deadline) {
  const std::string admin = Conninfo(cluster, "postgres");
  for (;;) {
    try {
      pqxx::connection conn(admin);
      pqxx::nontransaction tx(conn);
      std::string served = tx.exec1("SHOW data_directory")[0].as<std::string>();
      std::error_code ec;
      if (!fs::equivalent(served, cluster.pgdata, ec)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the PostgreSQL server on ", cluster.socket_path().string(),
            " serves ", served, ", not ", cluster.pgdata.string(),
            ": stop that server"));
      }
      if (tx.exec_params("SELECT 1 FROM pg_database WHERE datname = $1",
                         database)
              .empty()) {
        tx.exec0("CREATE DATABASE " + tx.quote_name(database));
      }
      return absl::OkStatus();
    } catch (const pqxx::broken_connection& e) {
      // Still starting up, or recovering from a crash of one of its
      // processes: wait, as long as something listens.
      if (absl::Now() >= deadline || !SocketAccepts(cluster.socket_path())) {
        return absl::UnavailableError(
            absl::StrCat("cannot connect to PostgreSQL in ",
                         cluster.pgdata.string(), ": ", OneLine(e.what())));
      }
      absl::SleepFor(absl::Milliseconds(100));
    } catch (const std::exception& e) {
      return absl::InternalError(
          absl::StrCat("cannot create database \"", database, "\" in ",
                       cluster.pgdata.string(), ": ", OneLine(e.what())));
    }
  }
}

absl::Status ValidateOptions(const EmbeddedPostgresOptions& options) {
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("the data directory path is empty");
  }
  // NAMEDATALEN - 1
  if (options.database.empty() || options.database.size() > 63 ||
      options.database.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("database name \"", options.database,
                     "\" must be 1 to 63 bytes without NUL"));
  }
  if (options.start_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("start_timeout must be positive");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<EmbeddedPostgres>> EmbeddedPostgres::Start(
    EmbeddedPostgresOptions options) {
  RETURN_IF_ERROR(ValidateOptions(options));
  const absl::Time deadline = absl::Now() + options.start_timeout;
  auto cluster = std::make_unique<EmbeddedCluster>();
  cluster->timeout = options.start_timeout;
  ASSIGN_OR_RETURN(fs::path data_dir, AbsoluteDataDir(options.data_dir));
  // Before creating anything: without PostgreSQL there is nothing to keep.
  ASSIGN_OR_RETURN(cluster->bin_dir,
                   FindBinDir(options.bin_dir, data_dir / kClusterDir));
  ASSIGN_OR_RETURN(cluster->data_dir, ClaimDataDir(std::move(data_dir)));
  cluster->pgdata = cluster->data_dir / kClusterDir;
  cluster->socket_dir = SocketDirFor(cluster->data_dir);
  ASSIGN_OR_RETURN(cluster->user, ResolveServerUser(*cluster));
  RETURN_IF_ERROR(HandOverDataDir(*cluster));

  ASSIGN_OR_RETURN(UniqueFd start_lock, LockStartLock(*cluster, deadline));
  std::error_code ec;
  if (!fs::exists(cluster->pgdata, ec)) RETURN_IF_ERROR(InitCluster(*cluster));
  RETURN_IF_ERROR(PrepareSocketDir(*cluster));
  ASSIGN_OR_RETURN(UniqueFd owner, TryTakeOwnership(*cluster));
  // Without a server we start one, and own it unless the process that owns
  // the directory still lives (its server crashed): that process stops it.
  // With a server we attach, adopting it when its owner is gone.
  const bool started_here = !SocketAccepts(cluster->socket_path());
  if (started_here) {
    RETURN_IF_ERROR(WriteServerConf(*cluster));
    RETURN_IF_ERROR(StartServer(*cluster, deadline));
  }
  absl::Status prepared = PrepareDatabase(*cluster, options.database, deadline);
  if (prepared.ok() && owner.valid()) {
    prepared = RecordOwner(*cluster, owner.get());
  }
  if (!prepared.ok()) {
    if (started_here) {
      StopServer(*cluster, absl::Now() + cluster->timeout, "fast")
          .IgnoreError();
    }
    return prepared;
  }
  std::string conninfo = Conninfo(*cluster, options.database);
  return std::unique_ptr<EmbeddedPostgres>(new EmbeddedPostgres(
      std::move(cluster), std::move(conninfo), owner.Release()));
}

EmbeddedPostgres::EmbeddedPostgres(std::unique_ptr<const Cluster> cluster,
                                   std::string conninfo, int owner_fd)
    : cluster_(std::move(cluster)),
      conninfo_(std::move(conninfo)),
      owns_server_(owner_fd >= 0),
      owner_fd_(owner_fd) {}

EmbeddedPostgres::~EmbeddedPostgres() {
  absl::Status stopped = Stop();
  if (!stopped.ok()) {
    std::fprintf(stderr, "embedded PostgreSQL: %s\n",
                 stopped.ToString().c_str());
  }
}

absl::Status EmbeddedPostgres::Stop() {
  absl::MutexLock lock(&mu_);
  if (owner_fd_ < 0) return absl::OkStatus();
  // Released on every path: ownership ends here whatever happens.
  UniqueFd owner(std::exchange(owner_fd_, -1));
  const EmbeddedCluster& cluster = *cluster_;
  const absl::Time deadline = absl::Now() + cluster.timeout;
  ASSIGN_OR_RETURN(UniqueFd start_lock, LockStartLock(cluster, deadline));
  absl::Status stopped = StopServer(cluster, deadline, "fast");
  // The pid of a process that owns nothing any more would mislead readers.
  if (ftruncate(owner.get(), 0) != 0) {
    // Harmless: the lock, not the pid, says who owns the server.
  }
  if (cluster.socket_dir != cluster.data_dir) {
    rmdir(cluster.socket_dir.c_str());  // fails harmlessly unless empty
  }
  // Before start.lock goes: a Start() waiting for it must find the server
  // unowned.
  owner.Reset();
  return stopped;
}

}  // namespace cqrs
