// A child process for tests that drive built binaries (the `bank` CLI and
// server): started with posix_spawn, its output discarded, kept or captured,
// killed with SIGKILL when the test ends while it still runs.
//
//   ChildProcess server(BANK_BINARY, {"serve", "--listen", "127.0.0.1:0"},
//                       ChildProcess::Output::kCapture);
//   const int port = server.WaitForListeningPort();
//   ...
//   CHECK(server.Kill(SIGTERM) == 0);
//
// A server always listens on port 0 and reports the port it bound in its
// "listening" log line: no test picks a port itself (a port found free can
// be taken by another process before the server binds it). A restarted
// server gets a new port, which its clients must follow.
//
// Thread-safety: one thread at a time.
#ifndef TESTS_SUPPORT_CHILD_PROCESS_H_
#define TESTS_SUPPORT_CHILD_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace cqrs::testing {

class ChildProcess {
 public:
  enum class Output {
    kDiscard,     // stdout and stderr to /dev/null
    kStdoutOnly,  // stderr to /dev/null
    kInherit,     // both to the test's own (to debug a test)
    kCapture,     // both to a temporary file: CapturedOutput(),
                  // WaitForListeningPort(), WaitForOutput()
  };

  // Starts `binary` with `args` (argv[0] is added); fails the test when it
  // cannot be started. The child is SIGKILLed when the thread that started
  // it ends (PR_SET_PDEATHSIG), so that a test that dies without running
  // destructors (an abort, a sanitizer report) leaves no server behind:
  // start children from a thread that outlives them.
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

  // What the process wrote to stdout and stderr so far (Output::kCapture
  // only; empty otherwise).
  std::string CapturedOutput() const;

  // Waits until the process logged a line holding `text`: true then; false
  // when `timeout` passed or the process ended first. Output::kCapture only.
  bool WaitForOutput(const std::string& text,
                     absl::Duration timeout = absl::Seconds(60));

  // Waits for the server's "listening" log line (text or JSON log format)
  // and returns the port it names. Fails the test, with the output so far,
  // when the process ends first or `timeout` passes. Output::kCapture only.
  int WaitForListeningPort(absl::Duration timeout = absl::Seconds(60));

  // The process id (to read /proc/<pid>/ while it runs).
  pid_t pid() const { return pid_; }

 private:
  // True when the process has ended (it is then reaped: Wait() returns its
  // exit code once more).
  bool Ended();

  pid_t pid_ = -1;
  int exit_code_ = -1;       // once reaped by Ended()
  std::string output_path_;  // Output::kCapture: the file, removed at the end
};

// The port of a server's "listening" log line in `output` (as
// `port=8080` in text, `"port":8080` in JSON), or 0 when no such line is
// there yet.
int ListeningPort(const std::string& output);

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
