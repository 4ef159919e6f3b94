// Captures log lines for the duration of a test.
//
//   http_test::LogCapture capture;     // Lines now go here, not stderr.
//   ...;
//   std::vector<std::string> lines = capture.Lines();
//
// Restores stderr output, text format and the info level on destruction.
//
// Thread-safety: Lines() and WaitForLine() may be called while other threads
// log.
#ifndef TESTS_FRAMEWORK_HTTP_LOG_CAPTURE_H_
#define TESTS_FRAMEWORK_HTTP_LOG_CAPTURE_H_

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "framework/log.h"

namespace cqrs {
namespace http_test {

class LogCapture {
 public:
  LogCapture() {
    SetLogSinkForTesting([this](absl::string_view line) {
      absl::MutexLock lock(&mu_);
      lines_.emplace_back(line);
    });
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  ~LogCapture() {
    SetLogSinkForTesting(nullptr);
    SetLogFormat(LogFormat::kText);
    SetMinLogLevel(LogLevel::kInfo);
  }

  std::vector<std::string> Lines() const {
    absl::MutexLock lock(&mu_);
    return lines_;
  }

  // Waits up to `timeout` for a line containing every one of `parts`;
  // returns it, or nullopt. The server logs a request after writing its
  // response, so a client may see the response first.
  absl::optional<std::string> WaitForLine(
      std::vector<std::string> parts,
      absl::Duration timeout = absl::Seconds(10)) const {
    absl::optional<std::string> found;
    const auto has_line = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const std::string& line : lines_) {
        bool all = true;
        for (const std::string& part : parts) {
          all = all && absl::StrContains(line, part);
        }
        if (all) {
          found = line;
          return true;
        }
      }
      return false;
    };
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&has_line), timeout);
    return found;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

}  // namespace http_test
}  // namespace cqrs

#endif  // TESTS_FRAMEWORK_HTTP_LOG_CAPTURE_H_
