// The bank's events are declared once, in their structs: each has its wire
// name (`static constexpr char kName[]`) beside its JSON shape
// (`static auto Json()`, framework/json_shape.h). From a variant of such
// structs come the registry the bank's aggregate types decode with, the
// app's declarations (cqrs::App::Event) and the names projections
// subscribe to.
//
//   const cqrs::EventRegistry<AccountEvent>& r =
//   EventRegistryOf<AccountEvent>(); DeclareEvents<AccountEvent>(app);
//
// Every bank event is at schema version 1 (none has needed an upcaster).
//
// Thread-safety: the registry is built once and immutable.
#ifndef EXAMPLE_APP_BANK_EVENTS_H_
#define EXAMPLE_APP_BANK_EVENTS_H_

#include <string>
#include <variant>
#include <vector>

#include "app/app.h"
#include "framework/event_registry.h"
#include "framework/json_shape.h"

namespace bank {
namespace bank_internal {

template <typename E, typename Variant>
void RegisterEvent(cqrs::EventRegistry<Variant>& registry) {
  cqrs::EventCodec<E> codec;
  codec.name = E::kName;
  codec.to_json = [](const E& e) { return cqrs::json::Encode(e); };
  codec.from_json = [](absl::string_view json) {
    return cqrs::json::Decode<E>(json);
  };
  // Distinct names and complete codecs: registration cannot fail.
  registry.template Register<E>(std::move(codec)).IgnoreError();
}

template <typename Variant>
struct Events;
template <typename... Es>
struct Events<std::variant<Es...>> {
  static cqrs::EventRegistry<std::variant<Es...>>* NewRegistry() {
    auto* r = new cqrs::EventRegistry<std::variant<Es...>>();
    (RegisterEvent<Es>(*r), ...);
    return r;
  }
  static void Declare(cqrs::App& app) { (app.Event<Es>(Es::kName), ...); }
  static std::vector<std::string> Names() { return {Es::kName...}; }
};

}  // namespace bank_internal

// The registry of every alternative of `Variant`, by its kName and shape.
template <typename Variant>
const cqrs::EventRegistry<Variant>& EventRegistryOf() {
  static const cqrs::EventRegistry<Variant>* registry =
      bank_internal::Events<Variant>::NewRegistry();
  return *registry;
}

// Declares every alternative of `Variant` on `app`.
template <typename Variant>
void DeclareEvents(cqrs::App& app) {
  bank_internal::Events<Variant>::Declare(app);
}

// The names of the alternatives of `Variant`, in their order.
template <typename Variant>
std::vector<std::string> EventNamesOf() {
  return bank_internal::Events<Variant>::Names();
}

}  // namespace bank

#endif  // EXAMPLE_APP_BANK_EVENTS_H_
