// A small structured logger: one line per call on stderr, as text or JSON.
//
//   cqrs::Log(cqrs::LogLevel::kInfo, "projection caught up",
//             {{"projection", name}, {"position", position}, {"lag_ms", 12}});
//
// Text lines read
//   2026-11-26T20:00:00.123Z INFO projection caught up projection=accounts ...
// (values holding spaces, quotes, '=' or control characters are quoted and
// escaped); JSON lines read
//   {"ts":"2026-11-26T20:00:00.123Z","level":"info","msg":"...","k":"v",...}
// with integer and boolean fields as JSON numbers and booleans.
//
// Never log secrets: no passwords, connection strings, authorization headers,
// idempotency keys or request bodies. The logger cannot tell a secret from
// any other string, so the caller is the only line of defence.
//
// Thread-safety: every function is safe to call concurrently. Each line is
// written with a single write() under a process-wide mutex, so lines from
// different threads never interleave.
#ifndef FRAMEWORK_LOG_H_
#define FRAMEWORK_LOG_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "absl/strings/string_view.h"

namespace cqrs {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

enum class LogFormat { kText, kJson };

// One field value. Converts implicitly from strings, integers, booleans and
// doubles so that call sites read `{"status", 200}`.
class LogValue {
 public:
  enum class Kind { kString, kInt, kUint, kDouble, kBool };

  LogValue(absl::string_view value)  // NOLINT(runtime/explicit)
      : kind_(Kind::kString), text_(value) {}
  LogValue(const std::string& value)  // NOLINT(runtime/explicit)
      : kind_(Kind::kString), text_(value) {}
  LogValue(const char* value)  // NOLINT(runtime/explicit)
      : kind_(Kind::kString), text_(value == nullptr ? "" : value) {}
  LogValue(bool value)  // NOLINT(runtime/explicit)
      : kind_(Kind::kBool), int_(value ? 1 : 0) {}
  LogValue(double value)  // NOLINT(runtime/explicit)
      : kind_(Kind::kDouble), double_(value) {}
  template <typename T,
            typename std::enable_if<std::is_integral<T>::value &&
                                        !std::is_same<T, bool>::value &&
                                        std::is_signed<T>::value,
                                    int>::type = 0>
  LogValue(T value)  // NOLINT(runtime/explicit)
      : kind_(Kind::kInt), int_(static_cast<int64_t>(value)) {}
  template <typename T,
            typename std::enable_if<std::is_integral<T>::value &&
                                        !std::is_same<T, bool>::value &&
                                        std::is_unsigned<T>::value,
                                    int>::type = 0>
  LogValue(T value)  // NOLINT(runtime/explicit)
      : kind_(Kind::kUint), uint_(static_cast<uint64_t>(value)) {}

  Kind kind() const { return kind_; }
  // Valid for kString.
  const std::string& text() const { return text_; }
  // Valid for kInt and kBool (0 or 1).
  int64_t int_value() const { return int_; }
  uint64_t uint_value() const { return uint_; }
  double double_value() const { return double_; }

 private:
  Kind kind_;
  std::string text_;
  int64_t int_ = 0;
  uint64_t uint_ = 0;
  double double_ = 0;
};

struct LogField {
  absl::string_view key;
  LogValue value;
};

// Writes one line when `level` is at or above the minimum level. Keys should
// be snake_case identifiers; messages should be constant text, with the
// variable parts in fields. Newlines in the message or values are escaped so
// that every call stays one line.
void Log(LogLevel level, absl::string_view message,
         std::initializer_list<LogField> fields = {});

// Returns true when a line at `level` would be written: lets callers skip
// building expensive fields.
bool LogEnabled(LogLevel level);

// Process-wide settings; the defaults are kText and kInfo.
void SetLogFormat(LogFormat format);
LogFormat GetLogFormat();
void SetMinLogLevel(LogLevel level);
LogLevel GetMinLogLevel();

// Parses "debug", "info", "warn" (or "warning") and "error", any case.
// Returns false and leaves `*level` alone on anything else.
bool ParseLogLevel(absl::string_view text, LogLevel* level);

// "DEBUG", "INFO", "WARN", "ERROR".
absl::string_view LogLevelName(LogLevel level);

// Lines go to stderr. Info and debug lines are written by a background
// thread within about 5 ms, many in one write (the access log is a line per
// request); a warning or an error is written at once, after every line
// logged before it. FlushLog() writes what is pending; it runs at exit by
// itself (atexit), so only a process that ends without exit() (a crash,
// SIGKILL, _exit) can lose the last few milliseconds of info lines.
void FlushLog();

// Receives every formatted line, newline included, instead of stderr. Called
// with the logger's mutex held: it must not log itself. Pass nullptr to
// restore stderr. Meant for tests.
using LogSink = std::function<void(absl::string_view line)>;
void SetLogSinkForTesting(LogSink sink);

}  // namespace cqrs

#endif  // FRAMEWORK_LOG_H_
