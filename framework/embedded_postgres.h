// A private PostgreSQL cluster in a data directory: the bank's embedded
// default when it is given no database URL.
//
//   ASSIGN_OR_RETURN(auto pg, cqrs::EmbeddedPostgres::Start(options));
//   pool_options.conninfo = pg->conninfo();  // stopped when `pg` goes away
//
// The first Start() on a directory creates the cluster (initdb, UTF8,
// C.UTF-8) and the database; later ones reuse it, so the data persists. The
// server binaries are those of the Debian package (the highest
// /usr/lib/postgresql/<version>/bin, the cluster's own version when it is
// installed), else the ones on PATH.
//
// Layout of `data_dir` (created 0700):
//   EMBEDDED_POSTGRES  marker: this directory is ours. Start() refuses a
//                      non-empty directory without it.
//   pgdata/            the PostgreSQL cluster itself
//   pgdata/embedded_postgres.conf  socket settings, rewritten at each start
//   server.log         the server's log
//   tools.log          output of initdb, pg_ctl and friends
//   owner.pid          pid of the process that stops the server on exit
//   start.lock         serializes Start() and Stop() across processes
//
// Access: the server listens ONLY on a Unix socket, never on TCP
// (listen_addresses is empty and pg_hba.conf rejects host connections). The
// socket is 0700 in a 0700 directory, so only the server's OS user (and
// root) can connect; they do so as the database superuser `postgres`
// without a password (trust authentication for the local socket only).
// The socket lives in `data_dir` itself when that path is short enough for
// a Unix socket address (107 bytes with "/.s.PGSQL.5432"); otherwise in
// /tmp/embedded-pg-<hash of the absolute data_dir>, a deterministic name so
// every process finds the same socket for the same directory.
//
// Running as root: PostgreSQL refuses to run as root, so the server runs as
// an unprivileged user through `runuser`: the owner of an existing cluster,
// else `postgres` (created as a system user when missing). `data_dir` is
// handed to that user, which must be able to reach it.
//
// Sharing: a Start() that finds a server already running in `data_dir` (say
// `bank projections rebuild` beside `bank serve`) uses it instead of
// starting another. Exactly one live process owns a running server: the one
// that started it, recorded in owner.pid and proven alive by the exclusive
// flock() it holds on that file for as long as it runs. Only the owner
// stops the server, so the other processes lose their connections when the
// owner exits. When the owner died without stopping the server (a crash,
// kill -9), the next Start() adopts the server and stops it on its exit.
// A server that died (kill -9, a reboot) is restarted by the next Start();
// leftover lock files of dead processes are cleared.
// (The lock is inherited by a child forked without exec, which then keeps
// ownership alive; this class itself only spawns with exec.)
//
// Thread-safety: Start() may be called concurrently, also for the same
// directory. An EmbeddedPostgres is thread-safe: conninfo() and
// owns_server() are constant, Stop() may race with itself.
#ifndef FRAMEWORK_EMBEDDED_POSTGRES_H_
#define FRAMEWORK_EMBEDDED_POSTGRES_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace framework_internal {
struct EmbeddedCluster;
}  // namespace framework_internal

namespace cqrs {

struct EmbeddedPostgresOptions {
  // Created on first use, parents included.
  std::string data_dir = "./bank-data";
  // Created in the cluster when missing.
  std::string database = "bank";
  // Bounds the whole of Start() and of Stop(), including waiting for another
  // process that is starting or stopping the server in `data_dir`.
  absl::Duration start_timeout = absl::Seconds(60);
  // Directory holding initdb, pg_ctl and postgres. Empty: search as
  // described at the top of this file.
  std::string bin_dir;
};

class EmbeddedPostgres {
 public:
  // Creates the cluster if needed and starts its server, or attaches to the
  // server already running there. One-line errors:
  //   kInvalidArgument: bad options, or a data_dir path with characters
  //     pg_ctl cannot pass through its shell (" $ ` \ or a newline).
  //   kFailedPrecondition: the server binaries are missing (install them
  //     with `apt-get install postgresql`); data_dir is not empty and was not
  //     created by this class; the cluster belongs to another OS user.
  //   kPermissionDenied: data_dir cannot be created or written, or (as root)
  //     the server's user cannot reach it.
  //   kDeadlineExceeded: start_timeout passed, e.g. waiting for another
  //     process that is starting the server.
  //   kInternal / kUnavailable: initdb or the server failed; the message
  //     ends with the last lines of their output and names the log file.
  static absl::StatusOr<std::unique_ptr<EmbeddedPostgres>> Start(
      EmbeddedPostgresOptions options);

  // Stops the server if this object owns it; errors go to stderr.
  ~EmbeddedPostgres();

  EmbeddedPostgres(const EmbeddedPostgres&) = delete;
  EmbeddedPostgres& operator=(const EmbeddedPostgres&) = delete;

  // libpq key=value connection string for `database` over the Unix socket,
  // as user `postgres`.
  const std::string& conninfo() const { return conninfo_; }

  // True when this object started (or adopted) the server and so stops it.
  bool owns_server() const { return owns_server_; }

  // Stops the server (pg_ctl stop -m fast, which disconnects every client,
  // also those of other processes) if this object owns it, and gives up
  // ownership; a no-op otherwise and on later calls. A server that is
  // already gone is not an error. Returns kDeadlineExceeded when it does
  // not stop within start_timeout, kInternal when pg_ctl fails; either way
  // ownership is released, so a later Start() adopts the server.
  absl::Status Stop();

 private:
  using Cluster = framework_internal::EmbeddedCluster;

  EmbeddedPostgres(std::unique_ptr<const Cluster> cluster, std::string conninfo,
                   int owner_fd);

  // Constant after construction.
  const std::unique_ptr<const Cluster> cluster_;  // paths, binaries, user
  const std::string conninfo_;
  const bool owns_server_;

  absl::Mutex mu_;
  // The locked owner.pid while this object owns the server, else -1.
  int owner_fd_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cqrs

#endif  // FRAMEWORK_EMBEDDED_POSTGRES_H_
