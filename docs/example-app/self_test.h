// `counter_app --self-test`: checks a running counter_app end to end over
// HTTP (one command, then a read of its own write), for the packaging test
// (tests/packaging/). Not needed to build an application.
//
//   RETURN_IF_ERROR(counter_app::RunSelfTest(server->port()));
//
// Thread-safety: plain functions; blocking.
#ifndef COUNTER_APP_SELF_TEST_H_
#define COUNTER_APP_SELF_TEST_H_

#include <string>

#include "absl/status/status.h"

namespace counter_app {

// Increments a counter through 127.0.0.1:`port`, then reads it back with
// X-Min-Position. Returns kInternal describing the first unexpected answer,
// kUnavailable when the server cannot be reached.
absl::Status RunSelfTest(int port);

// Drops `schema` and everything in it. Errors as cqrs::PgPool::Run.
absl::Status DropSchema(const std::string& url, const std::string& schema);

}  // namespace counter_app

#endif  // COUNTER_APP_SELF_TEST_H_
