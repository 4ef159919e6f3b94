// Runs a program to completion, without a shell, its output appended to a
// file.
//
//   framework_internal::SubprocessOptions options;
//   options.argv = {"/usr/lib/postgresql/15/bin/pg_ctl", "status", "-D", dir};
//   options.output_path = log_path;
//   ASSIGN_OR_RETURN(int exit_status,
//   framework_internal::RunSubprocess(options));
//
// The program is started with posix_spawn, so each argument reaches it
// verbatim. It gets stdin from /dev/null, default signal dispositions and an
// empty signal mask (whatever the caller's threads block or ignore), and `/`
// as its working directory, which every user can enter; relative paths in
// `argv` therefore resolve against `/`.
//
// Thread-safety: RunSubprocess may be called from several threads at once.
// It waits for its own child by pid, so a SIGCHLD handler elsewhere in the
// process that reaps every child (waitpid(-1)) would make it fail.
#ifndef FRAMEWORK_INTERNAL_SUBPROCESS_H_
#define FRAMEWORK_INTERNAL_SUBPROCESS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace framework_internal {

struct SubprocessOptions {
  // argv[0] is the absolute path of the program; PATH is not searched.
  std::vector<std::string> argv;
  // stdout and stderr are appended to this file, created 0600 if missing.
  // Empty: /dev/null.
  std::string output_path;
};

// Runs the program and waits for it. Returns its exit code, or 128 + the
// signal number when a signal ended it (as a shell reports it). Returns
// kInvalidArgument for an empty argv, kFailedPrecondition when the program
// cannot be started (missing or not executable) or the output file cannot be
// opened, and kInternal when waiting for it fails.
absl::StatusOr<int> RunSubprocess(const SubprocessOptions& options);

}  // namespace framework_internal

#endif  // FRAMEWORK_INTERNAL_SUBPROCESS_H_
