// Metadata that a command stamps into every event it appends.
//
//   CommandMetadata meta = CommandMetadata::ForCommand(correlation_id);
//   event.metadata = meta.ToJson();
//   // {"command_id":"...","correlation_id":"...","causation_id":"..."}
//
// The command id identifies one execution request; the correlation id ties
// together everything that follows from one outside request (HTTP
// X-Correlation-Id); the causation id names what directly caused the
// command: the command itself for outside requests, the triggering event for
// commands a process manager sends.
//
// Thread-safety: a value type.
#ifndef COMMANDS_COMMAND_METADATA_H_
#define COMMANDS_COMMAND_METADATA_H_

#include <string>

#include "absl/strings/string_view.h"

namespace cqrs::commands {

struct CommandMetadata {
  std::string command_id;
  std::string correlation_id;
  std::string causation_id;

  // A new command id; the correlation id given (or a new one when empty);
  // causation id = the command id.
  static CommandMetadata ForCommand(absl::string_view correlation_id);

  // The metadata JSON object stamped into events.
  std::string ToJson() const;
};

}  // namespace cqrs::commands

#endif  // COMMANDS_COMMAND_METADATA_H_
