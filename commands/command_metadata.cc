#include "commands/command_metadata.h"

#include "framework/http/message.h"
#include "framework/uuid.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs::commands {

CommandMetadata CommandMetadata::ForCommand(absl::string_view correlation_id,
                                            absl::string_view actor) {
  CommandMetadata m;
  m.command_id = NewUuid();
  m.correlation_id =
      correlation_id.empty() ? NewUuid() : std::string(correlation_id);
  m.causation_id = m.command_id;
  m.actor = std::string(actor);
  return m;
}

std::string CommandMetadata::ToJson() const {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("command_id");
  w.String(command_id.data(), command_id.size());
  w.Key("correlation_id");
  w.String(correlation_id.data(), correlation_id.size());
  w.Key("causation_id");
  w.String(causation_id.data(), causation_id.size());
  const absl::string_view who =
      actor.empty() ? http::kAnonymousActor : absl::string_view(actor);
  w.Key("actor");
  w.String(who.data(), who.size());
  if (!on_behalf_of.empty()) {
    w.Key("on_behalf_of");
    w.String(on_behalf_of.data(), on_behalf_of.size());
  }
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace cqrs::commands
