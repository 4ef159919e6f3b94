#include "framework/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "framework/http/internal/utf8.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs {
namespace {

std::atomic<LogFormat> g_format{LogFormat::kText};
std::atomic<LogLevel> g_min_level{LogLevel::kInfo};

// Info and debug lines (the access log: one per request) collect in
// `pending` and are written by a background thread within kFlushDelay, or at
// once when kFlushBytes collect: one write(2) for many lines instead of one
// per line under a lock that every thread that logs queues on. A warning or
// an error is written at once, after everything pending, and so is
// everything at exit (FlushLog, registered with atexit).
constexpr absl::Duration kFlushDelay = absl::Milliseconds(5);
constexpr size_t kFlushBytes = 64 * 1024;

struct Output {
  // Guards the buffer; held only to append a line or take the buffer.
  absl::Mutex mu;
  LogSink sink ABSL_GUARDED_BY(mu);
  std::string pending ABSL_GUARDED_BY(mu);
  bool flusher_started ABSL_GUARDED_BY(mu) = false;
  // Taken before `mu` is released by whoever took the buffer, and held
  // through the write(2): lines reach stderr in the order they were logged.
  absl::Mutex write_mu ABSL_ACQUIRED_AFTER(mu);
};

// Never destroyed: threads may still log while static destructors run.
Output& GetOutput() {
  static Output* output = new Output();
  return *output;
}

// Appends "2026-12-07T16:35:01.668Z". The part up to the seconds is
// formatted once per second and thread: the access log writes a line per
// request.
void AppendTimestamp(std::string* out) {
  const int64_t millis = absl::ToUnixMillis(absl::Now());
  const int64_t seconds = millis / 1000;
  const int fraction = static_cast<int>(millis % 1000);
  thread_local int64_t cached_seconds = -1;
  thread_local std::string cached;
  if (seconds != cached_seconds) {
    cached =
        absl::FormatTime("%Y-%m-%dT%H:%M:%S", absl::FromUnixSeconds(seconds),
                         absl::UTCTimeZone());
    cached_seconds = seconds;
  }
  out->append(cached);
  out->push_back('.');
  out->push_back(static_cast<char>('0' + fraction / 100));
  out->push_back(static_cast<char>('0' + fraction / 10 % 10));
  out->push_back(static_cast<char>('0' + fraction % 10));
  out->push_back('Z');
}

absl::string_view LowerLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

std::string FormatDouble(double value) {
  if (!std::isfinite(value)) return std::isnan(value) ? "NaN" : "Inf";
  return absl::StrCat(value);
}

bool NeedsQuoting(absl::string_view text) {
  if (text.empty()) return true;
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f || c == '"' || c == '=' || c == '\\') {
      return true;
    }
  }
  return false;
}

// Escapes backslash, quote and control characters so that the text stays on
// one line and can be read back unambiguously.
void AppendEscaped(absl::string_view text, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (u < 0x20 || u == 0x7f) {
          out->append("\\x");
          out->push_back(kHex[u >> 4]);
          out->push_back(kHex[u & 0xf]);
        } else {
          out->push_back(c);
        }
    }
  }
}

void AppendTextValue(const LogValue& value, std::string* out) {
  switch (value.kind()) {
    case LogValue::Kind::kString:
      if (NeedsQuoting(value.text())) {
        out->push_back('"');
        AppendEscaped(value.text(), out);
        out->push_back('"');
      } else {
        out->append(value.text());
      }
      return;
    case LogValue::Kind::kInt:
      absl::StrAppend(out, value.int_value());
      return;
    case LogValue::Kind::kUint:
      absl::StrAppend(out, value.uint_value());
      return;
    case LogValue::Kind::kDouble:
      out->append(FormatDouble(value.double_value()));
      return;
    case LogValue::Kind::kBool:
      out->append(value.int_value() != 0 ? "true" : "false");
      return;
  }
}

std::string FormatText(LogLevel level, absl::string_view message,
                       std::initializer_list<LogField> fields) {
  std::string line;
  line.reserve(256);  // an access-log line, without growing
  AppendTimestamp(&line);
  line.push_back(' ');
  line.append(LogLevelName(level).data(), LogLevelName(level).size());
  line.push_back(' ');
  // The message is not quoted (it is meant to be constant text), but it is
  // escaped so that a stray newline cannot forge a second line.
  AppendEscaped(message, &line);
  for (const LogField& field : fields) {
    line.push_back(' ');
    line.append(field.key.data(), field.key.size());
    line.push_back('=');
    AppendTextValue(field.value, &line);
  }
  line.push_back('\n');
  return line;
}

std::string FormatJson(LogLevel level, absl::string_view message,
                       std::initializer_list<LogField> fields) {
  // RapidJSON copies bytes as they are; logged values may hold client bytes
  // that are not UTF-8. (The repair helper lives with the HTTP code, which
  // needs it most; it is private to this library either way.)
  const auto safe = [](absl::string_view text) {
    return http_internal::ToValidUtf8(text);
  };
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  std::string ts;
  AppendTimestamp(&ts);
  const absl::string_view level_name = LowerLevelName(level);
  writer.StartObject();
  writer.Key("ts");
  writer.String(ts.data(), static_cast<rapidjson::SizeType>(ts.size()));
  writer.Key("level");
  writer.String(level_name.data(),
                static_cast<rapidjson::SizeType>(level_name.size()));
  writer.Key("msg");
  writer.String(safe(message));
  for (const LogField& field : fields) {
    const std::string key = safe(field.key);
    writer.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
    const LogValue& value = field.value;
    switch (value.kind()) {
      case LogValue::Kind::kString:
        writer.String(safe(value.text()));
        break;
      case LogValue::Kind::kInt:
        writer.Int64(value.int_value());
        break;
      case LogValue::Kind::kUint:
        writer.Uint64(value.uint_value());
        break;
      case LogValue::Kind::kDouble:
        // JSON has no NaN or infinity: those become strings.
        if (std::isfinite(value.double_value())) {
          writer.Double(value.double_value());
        } else {
          const std::string text = FormatDouble(value.double_value());
          writer.String(text.data(),
                        static_cast<rapidjson::SizeType>(text.size()));
        }
        break;
      case LogValue::Kind::kBool:
        writer.Bool(value.int_value() != 0);
        break;
    }
  }
  writer.EndObject();
  std::string line(buffer.GetString(), buffer.GetSize());
  line.push_back('\n');
  return line;
}

void WriteAll(absl::string_view data) {
  // A pipe may accept a long write in pieces; keep going until it is all
  // out.
  while (!data.empty()) {
    const ssize_t n = ::write(STDERR_FILENO, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // Nowhere left to report the failure.
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// Writes what `output.pending` holds plus `line`, in that order, and
// releases output.mu.
void WritePendingAnd(Output& output, absl::string_view line)
    ABSL_UNLOCK_FUNCTION(output.mu) {
  std::string out;
  out.swap(output.pending);
  out.append(line.data(), line.size());
  output.write_mu.Lock();
  output.mu.Unlock();
  if (!out.empty()) WriteAll(out);
  output.write_mu.Unlock();
}

void FlusherLoop() {
  Output& output = GetOutput();
  while (true) {
    {
      absl::MutexLock lock(&output.mu);
      auto has_lines = [&output]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(output.mu) {
        return !output.pending.empty();
      };
      output.mu.Await(absl::Condition(&has_lines));
    }
    // Lets the lines of the next few milliseconds join this write.
    absl::SleepFor(kFlushDelay);
    FlushLog();
  }
}

void WriteLine(LogLevel level, absl::string_view line) {
  Output& output = GetOutput();
  output.mu.Lock();
  if (output.sink) {
    output.sink(line);
    output.mu.Unlock();
    return;
  }
  if (static_cast<int>(level) >= static_cast<int>(LogLevel::kWarn) ||
      output.pending.size() + line.size() >= kFlushBytes) {
    return WritePendingAnd(output, line);
  }
  output.pending.append(line.data(), line.size());
  if (!output.flusher_started) {
    output.flusher_started = true;
    std::atexit(FlushLog);
    std::thread(FlusherLoop).detach();
  }
  output.mu.Unlock();
}

}  // namespace

void Log(LogLevel level, absl::string_view message,
         std::initializer_list<LogField> fields) {
  if (!LogEnabled(level)) return;
  WriteLine(level, GetLogFormat() == LogFormat::kJson
                       ? FormatJson(level, message, fields)
                       : FormatText(level, message, fields));
}

void FlushLog() {
  Output& output = GetOutput();
  output.mu.Lock();
  // Also when nothing is pending: waits for a write in progress, so that
  // everything logged before the call is out when it returns.
  WritePendingAnd(output, "");
}

bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) >=
         static_cast<int>(g_min_level.load(std::memory_order_relaxed));
}

void SetLogFormat(LogFormat format) {
  g_format.store(format, std::memory_order_relaxed);
}

LogFormat GetLogFormat() { return g_format.load(std::memory_order_relaxed); }

void SetMinLogLevel(LogLevel level) {
  g_min_level.store(level, std::memory_order_relaxed);
}

LogLevel GetMinLogLevel() {
  return g_min_level.load(std::memory_order_relaxed);
}

bool ParseLogLevel(absl::string_view text, LogLevel* level) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "debug") {
    *level = LogLevel::kDebug;
  } else if (lower == "info") {
    *level = LogLevel::kInfo;
  } else if (lower == "warn" || lower == "warning") {
    *level = LogLevel::kWarn;
  } else if (lower == "error") {
    *level = LogLevel::kError;
  } else {
    return false;
  }
  return true;
}

absl::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kWarn:
      return "WARN";
    case LogLevel::kError:
      return "ERROR";
  }
  return "INFO";
}

void SetLogSinkForTesting(LogSink sink) {
  FlushLog();
  Output& output = GetOutput();
  absl::MutexLock lock(&output.mu);
  output.sink = std::move(sink);
}

}  // namespace cqrs
