#include "tests/support/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "tests/support/wait.h"

extern char** environ;

namespace cqrs::testing {

ChildProcess::ChildProcess(const std::string& binary,
                           std::vector<std::string> args, Output output) {
  args.insert(args.begin(), binary);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (output == Output::kCapture) {
    const char* tmp = std::getenv("TMPDIR");
    std::string path =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
        "/child-output-XXXXXX";
    const int fd = mkstemp(path.data());
    REQUIRE(fd >= 0);
    close(fd);
    output_path_ = path;
  }
  // Where the child's stdout and stderr go, opened before the fork: the
  // child only calls async-signal-safe functions before exec.
  int out_fd = -1;
  int err_fd = -1;
  if (output == Output::kCapture) {
    // O_APPEND: lines of the two streams never overwrite each other.
    out_fd = open(output_path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    err_fd = out_fd;
  } else if (output == Output::kDiscard) {
    out_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    err_fd = out_fd;
  } else if (output == Output::kStdoutOnly) {
    err_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  }
  // The child reports a failed exec through this pipe (closed on exec).
  int report[2];
  REQUIRE(pipe2(report, O_CLOEXEC) == 0);
  const pid_t parent = getpid();
  pid_ = fork();
  if (pid_ == 0) {
    // Killed with its parent, even when the test dies without running
    // destructors (an abort, a sanitizer report): a server left behind
    // would keep loading the machine and the next tests.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (out_fd >= 0) dup2(out_fd, 1);
    if (err_fd >= 0) dup2(err_fd, 2);
    execve(binary.c_str(), argv.data(), environ);
    const int error = errno;
    (void)!write(report[1], &error, sizeof error);
    _exit(127);
  }
  close(report[1]);
  int exec_error = 0;
  const ssize_t got =
      pid_ > 0 ? read(report[0], &exec_error, sizeof exec_error) : 0;
  close(report[0]);
  if (out_fd >= 0) close(out_fd);
  if (err_fd >= 0 && err_fd != out_fd) close(err_fd);
  REQUIRE(pid_ > 0);
  if (got != 0) {
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  INFO(binary << ": " << std::strerror(exec_error));
  REQUIRE(got == 0);
}

ChildProcess::~ChildProcess() {
  Kill(SIGKILL);
  if (!output_path_.empty()) unlink(output_path_.c_str());
}

namespace {

int ExitCode(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

int ChildProcess::Kill(int signal) {
  if (pid_ <= 0) return Wait();
  kill(pid_, signal);
  return Wait();
}

int ChildProcess::Wait() {
  if (pid_ <= 0) {
    const int reaped = exit_code_;
    exit_code_ = -1;
    return reaped;
  }
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return ExitCode(status);
}

bool ChildProcess::Ended() {
  if (pid_ <= 0) return true;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
  pid_ = -1;
  exit_code_ = ExitCode(status);
  return true;
}

std::string ChildProcess::CapturedOutput() const {
  if (output_path_.empty()) return "";
  std::ifstream in(output_path_, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

bool ChildProcess::WaitForOutput(const std::string& text,
                                 absl::Duration timeout) {
  REQUIRE(!output_path_.empty());
  bool seen = false;
  Eventually(
      [&] {
        // Read before looking at the process: what it wrote before it ended
        // still counts.
        const bool ended = Ended();
        seen = absl::StrContains(CapturedOutput(), text);
        return seen || ended;
      },
      timeout, absl::Milliseconds(10));
  return seen;
}

int ChildProcess::WaitForListeningPort(absl::Duration timeout) {
  REQUIRE(!output_path_.empty());
  int port = 0;
  bool ended = false;
  Eventually(
      [&] {
        ended = Ended();
        port = ListeningPort(CapturedOutput());
        return port != 0 || ended;
      },
      timeout, absl::Milliseconds(10));
  INFO("the process's output:\n" << CapturedOutput());
  INFO((ended ? "it ended before it listened" : "it did not listen in time"));
  REQUIRE(port != 0);
  return port;
}

int ListeningPort(const std::string& output) {
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    // Text: "<time> INFO listening program=bank ... port=8080 ..."; JSON:
    // {"ts":...,"msg":"listening",...,"port":8080,...}.
    const bool text = absl::StrContains(line, " listening ");
    const bool json = absl::StrContains(line, "\"msg\":\"listening\"");
    if (!text && !json) continue;
    const absl::string_view key = json ? "\"port\":" : " port=";
    const size_t at = line.find(key);
    if (at == absl::string_view::npos) continue;
    int port = 0;
    for (size_t i = at + key.size();
         i < line.size() && std::isdigit(static_cast<unsigned char>(line[i]));
         ++i) {
      port = port * 10 + (line[i] - '0');
    }
    if (port > 0 && port < 65536) return port;
  }
  return 0;
}

std::string ShellResult::LastLine() const {
  size_t end = output.find_last_not_of("\r\n");
  if (end == std::string::npos) return "";
  const size_t begin = output.rfind('\n', end);
  return output.substr(begin == std::string::npos ? 0 : begin + 1,
                       end + 1 - (begin == std::string::npos ? 0 : begin + 1));
}

ShellResult RunShell(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    output.append(buffer, n);
  }
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

}  // namespace cqrs::testing
