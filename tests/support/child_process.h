// A child process for tests that drive built binaries (the `bank` CLI and
// server): started with posix_spawn, its output discarded or kept, killed
// with SIGKILL when the test ends while it still runs.
//
//   ChildProcess server(BANK_BINARY, {"serve", "--listen", "127.0.0.1:0"});
//   ...
//   CHECK(server.Kill(SIGTERM) == 0);
//
// Thread-safety: one thread at a time.
#ifndef TESTS_SUPPORT_CHILD_PROCESS_H_
#define TESTS_SUPPORT_CHILD_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace cqrs::testing {

class ChildProcess {
 public:
  enum class Output {
    kDiscard,     // stdout and stderr to /dev/null
    kStdoutOnly,  // stderr to /dev/null
    kInherit,     // both to the test's own (to debug a test)
  };

  // Starts `binary` with `args` (argv[0] is added); fails the test when it
  // cannot be started.
  ChildProcess(const std::string& binary, std::vector<std::string> args,
               Output output = Output::kDiscard);
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  // Sends `signal` and waits: returns the exit code (128 + signal when
  // killed), or -1 when it was already waited for.
  int Kill(int signal);
  // Waits for the process to end; same return values as Kill().
  int Wait();

 private:
  pid_t pid_ = -1;
};

// A TCP port on 127.0.0.1 that was free a moment ago, for a child server
// that takes its port on the command line (`bank serve --listen`). Fails
// the test when the system has none.
int FreePort();

// What a shell command printed and how it ended.
struct ShellResult {
  int exit_code;       // -1 when it did not exit normally
  std::string output;  // what it wrote to stdout (redirect 2>&1 for both)

  // The last non-empty line of `output`, without its newline: what
  // `APP keys create` prints its token on.
  std::string LastLine() const;
};

// Runs `command` with /bin/sh and waits for it; fails the test when it
// cannot be started.
ShellResult RunShell(const std::string& command);

}  // namespace cqrs::testing

#endif  // TESTS_SUPPORT_CHILD_PROCESS_H_
