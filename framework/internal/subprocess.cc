#include "framework/internal/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace framework_internal {
namespace {

// Owns the posix_spawn attribute objects so every return path frees them.
class SpawnSetup {
 public:
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions_);
    posix_spawnattr_init(&attr_);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions_);
    posix_spawnattr_destroy(&attr_);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;

  posix_spawn_file_actions_t* actions() { return &actions_; }
  posix_spawnattr_t* attr() { return &attr_; }

 private:
  posix_spawn_file_actions_t actions_;
  posix_spawnattr_t attr_;
};

}  // namespace

absl::StatusOr<int> RunSubprocess(const SubprocessOptions& options) {
  if (options.argv.empty() || options.argv[0].empty()) {
    return absl::InvalidArgumentError("RunSubprocess: empty argv");
  }
  const std::string& program = options.argv[0];
  const std::string output =
      options.output_path.empty() ? "/dev/null" : options.output_path;
  // O_CLOEXEC: only the child's dup2'd copies survive the exec, so no other
  // program spawned meanwhile by another thread inherits this descriptor.
  int out_fd =
      open(output.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (out_fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open ", output, " for the output of ", program,
                     ": ", std::strerror(errno)));
  }

  SpawnSetup setup;
  posix_spawn_file_actions_addopen(setup.actions(), STDIN_FILENO, "/dev/null",
                                   O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(setup.actions(), out_fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(setup.actions(), out_fd, STDERR_FILENO);
  posix_spawn_file_actions_addchdir_np(setup.actions(), "/");
  sigset_t no_signals;
  sigemptyset(&no_signals);
  sigset_t all_signals;
  sigfillset(&all_signals);
  posix_spawnattr_setsigmask(setup.attr(), &no_signals);
  posix_spawnattr_setsigdefault(setup.attr(), &all_signals);
  posix_spawnattr_setflags(setup.attr(),
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> argv;
  argv.reserve(options.argv.size() + 1);
  for (const std::string& arg : options.argv) {
    argv.push_back(const_cast<char*>(arg.c_str()));
  }
  argv.push_back(nullptr);

  pid_t pid = 0;
  int spawn_error = posix_spawn(&pid, program.c_str(), setup.actions(),
                                setup.attr(), argv.data(), environ);
  close(out_fd);
  if (spawn_error != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot run ", program, ": ", std::strerror(spawn_error)));
  }

  int wait_status = 0;
  while (waitpid(pid, &wait_status, 0) < 0) {
    if (errno != EINTR) {
      return absl::InternalError(absl::StrCat(
          "waiting for ", program, " failed: ", std::strerror(errno)));
    }
  }
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return WEXITSTATUS(wait_status);
}

}  // namespace framework_internal
