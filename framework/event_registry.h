// A typed registry of an application's events: names, schema versions,
// JSON encoding and decoding, and upcasters from older schema versions.
//
//   using AccountEvent = std::variant<Opened, Deposited>;
//   cqrs::EventRegistry<AccountEvent> registry;
//   registry.Register<Deposited>({"Deposited", 2, DepositedToJson,
//                                 DepositedFromJson, {{1, DepositedV1ToV2}}});
//   ASSIGN_OR_RETURN(AccountEvent e, registry.Decode(type, version, json));
//
// Each alternative of the variant is registered once under a unique name.
// Decoding an event stored with an older schema version runs the upcasters
// v -> v+1 -> ... -> current on its JSON first. Decoding an unknown type or a
// newer schema version than registered fails with kFailedPrecondition: the
// event was written by other (or newer) code, which the caller must not
// silently ignore.
//
// Thread-safety: register everything before use; afterwards the registry is
// read-only and safe to share between threads.
#ifndef FRAMEWORK_EVENT_REGISTRY_H_
#define FRAMEWORK_EVENT_REGISTRY_H_

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace cqrs {

// An event in its stored form.
struct EncodedEvent {
  std::string type;
  int schema_version = 1;
  std::string data;  // JSON object
};

// Turns the JSON of schema version v into that of version v + 1.
using Upcaster = std::function<absl::StatusOr<std::string>(absl::string_view)>;

template <typename T>
struct EventCodec {
  std::string name;
  int schema_version = 1;  // the version to_json writes
  std::function<std::string(const T&)> to_json;
  // Returns kInvalidArgument (or any error) for JSON it cannot read.
  std::function<absl::StatusOr<T>(absl::string_view json)> from_json;
  // upcasters[v] upgrades version v to v + 1, for every v < schema_version
  // that may still be stored.
  std::map<int, Upcaster> upcasters;
};

template <typename Variant>
class EventRegistry {
 public:
  // Registers alternative T. Returns kAlreadyExists for a name or type that
  // is registered already, kInvalidArgument for an incomplete codec.
  template <typename T>
  absl::Status Register(EventCodec<T> codec) {
    constexpr size_t index = IndexOf<T>();
    if (codec.name.empty() || !codec.to_json || !codec.from_json ||
        codec.schema_version < 1) {
      return absl::InvalidArgumentError("incomplete event codec");
    }
    if (by_name_.contains(codec.name)) {
      return absl::AlreadyExistsError(
          absl::StrCat("event type '", codec.name, "' registered twice"));
    }
    Entry& entry = entries_[index];
    if (!entry.name.empty()) {
      return absl::AlreadyExistsError(
          absl::StrCat("event alternative registered twice: '", entry.name,
                       "' and '", codec.name, "'"));
    }
    entry.name = codec.name;
    entry.schema_version = codec.schema_version;
    entry.upcasters = std::move(codec.upcasters);
    entry.encode = [to_json = std::move(codec.to_json)](const Variant& v) {
      return to_json(std::get<T>(v));
    };
    entry.decode = [from_json = std::move(codec.from_json)](
                       absl::string_view json) -> absl::StatusOr<Variant> {
      absl::StatusOr<T> value = from_json(json);
      if (!value.ok()) return value.status();
      return Variant(std::in_place_type<T>, *std::move(value));
    };
    by_name_[entry.name] = index;
    return absl::OkStatus();
  }

  // The stored form of `event`. Returns kFailedPrecondition when its type
  // was never registered (a programming error).
  absl::StatusOr<EncodedEvent> Encode(const Variant& event) const {
    const Entry& entry = entries_[event.index()];
    if (entry.name.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "event alternative ", event.index(), " is not registered"));
    }
    return EncodedEvent{entry.name, entry.schema_version, entry.encode(event)};
  }

  // Decodes a stored event, upcasting older schema versions. Errors:
  // kFailedPrecondition for an unknown type, a newer schema version, or a
  // missing upcaster; whatever from_json or an upcaster returns.
  absl::StatusOr<Variant> Decode(absl::string_view type, int schema_version,
                                 absl::string_view json) const {
    auto it = by_name_.find(type);
    if (it == by_name_.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("unknown event type '", type, "'"));
    }
    const Entry& entry = entries_[it->second];
    if (schema_version > entry.schema_version) {
      return absl::FailedPreconditionError(absl::StrCat(
          "event type '", type, "' has schema version ", schema_version,
          ", newer than this build's ", entry.schema_version,
          ": upgrade the code before reading it"));
    }
    if (schema_version < 1) {
      return absl::FailedPreconditionError(
          absl::StrCat("event type '", type, "' has invalid schema version ",
                       schema_version));
    }
    std::string upcast;
    absl::string_view current = json;
    for (int v = schema_version; v < entry.schema_version; ++v) {
      auto up = entry.upcasters.find(v);
      if (up == entry.upcasters.end()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "no upcaster for event type '", type, "' from version ", v));
      }
      absl::StatusOr<std::string> next = up->second(current);
      if (!next.ok()) return next.status();
      upcast = *std::move(next);
      current = upcast;
    }
    return entry.decode(current);
  }

  // True when `type` names a registered event.
  bool Knows(absl::string_view type) const { return by_name_.contains(type); }

  // The registered names, in variant order.
  std::vector<std::string> Names() const {
    std::vector<std::string> names;
    for (const Entry& e : entries_) {
      if (!e.name.empty()) names.push_back(e.name);
    }
    return names;
  }

 private:
  struct Entry {
    std::string name;
    int schema_version = 1;
    std::map<int, Upcaster> upcasters;
    std::function<std::string(const Variant&)> encode;
    std::function<absl::StatusOr<Variant>(absl::string_view)> decode;
  };

  template <typename T, size_t I = 0>
  static constexpr size_t IndexOf() {
    static_assert(I < std::variant_size_v<Variant>,
                  "type is not an alternative of the registry's variant");
    if constexpr (std::is_same_v<std::variant_alternative_t<I, Variant>, T>) {
      return I;
    } else {
      return IndexOf<T, I + 1>();
    }
  }

  Entry entries_[std::variant_size_v<Variant>];
  absl::flat_hash_map<std::string, size_t> by_name_;
};

}  // namespace cqrs

#endif  // FRAMEWORK_EVENT_REGISTRY_H_
