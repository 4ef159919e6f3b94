#include "tests/support/child_process.h"

#include <signal.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "framework/log.h"

namespace cqrs::testing {
namespace {

// The "listening" line exactly as `APP serve` logs it (app/runtime.cc).
std::string ListeningLine(LogFormat format, int port) {
  std::string line;
  SetLogFormat(format);
  SetLogSinkForTesting([&](absl::string_view l) { line = std::string(l); });
  Log(LogLevel::kInfo, "listening",
      {{"program", "bank"},
       {"address", "127.0.0.1:0"},
       {"port", port},
       {"projections", "here"},
       {"authentication", "on"}});
  SetLogSinkForTesting(nullptr);
  SetLogFormat(LogFormat::kText);
  return line;
}

TEST_CASE("the port of a listening line is read in both log formats",
          "[support]") {
  for (LogFormat format : {LogFormat::kText, LogFormat::kJson}) {
    const std::string line = ListeningLine(format, 41234);
    INFO(line);
    CHECK(ListeningPort("earlier line\n" + line + "later\n") == 41234);
  }
  CHECK(ListeningPort("") == 0);
  CHECK(ListeningPort("2026-11-26T20:00:00Z INFO stopped port=5\n") == 0);
  CHECK(ListeningPort(ListeningLine(LogFormat::kText, 0)) == 0);
}

TEST_CASE("a captured child's output and listening port are seen",
          "[support]") {
  ChildProcess child("/bin/sh",
                     {"-c",
                      "echo starting; echo '2026-11-26T20:00:00Z INFO "
                      "listening program=x port=5678' >&2; exec sleep 60"},
                     ChildProcess::Output::kCapture);
  CHECK(child.WaitForListeningPort() == 5678);
  CHECK(child.WaitForOutput("starting"));
  CHECK(child.Kill(SIGKILL) == 128 + SIGKILL);

  ChildProcess ended("/bin/sh", {"-c", "echo done; exit 3"},
                     ChildProcess::Output::kCapture);
  CHECK_FALSE(ended.WaitForOutput("never printed"));
  CHECK(ended.CapturedOutput() == "done\n");
  CHECK(ended.Wait() == 3);
}

TEST_CASE("a child does not outlive the thread that started it", "[support]") {
  // What a test that aborts before its destructors run relies on: its
  // servers are killed with it.
  std::unique_ptr<ChildProcess> child;
  std::thread starter([&] {
    child = std::make_unique<ChildProcess>("/bin/sleep",
                                           std::vector<std::string>{"600"});
  });
  starter.join();
  // SIGKILLed when the starter ended, not after 600 s.
  CHECK(child->Wait() == 128 + SIGKILL);
}

}  // namespace
}  // namespace cqrs::testing
