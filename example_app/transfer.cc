#include "example_app/transfer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "example_app/account.h"
#include "framework/http/json_body.h"
#include "framework/http/status_mapping.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace bank {
namespace {

using TransferDecision = absl::StatusOr<std::vector<TransferEvent>>;
using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

// A codec for an event without fields: "{}".
template <typename Event>
cqrs::EventCodec<Event> EmptyCodec(std::string name) {
  cqrs::EventCodec<Event> codec;
  codec.name = std::move(name);
  codec.to_json = [](const Event&) { return std::string("{}"); };
  codec.from_json = [](absl::string_view) -> absl::StatusOr<Event> {
    return Event{};
  };
  return codec;
}

void String(Writer& w, const std::string& s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

cqrs::EventRegistry<TransferEvent>* BuildRegistry() {
  auto* r = new cqrs::EventRegistry<TransferEvent>();
  cqrs::EventCodec<TransferRequested> requested;
  requested.name = "TransferRequested";
  requested.to_json = [](const TransferRequested& e) {
    rapidjson::StringBuffer buffer;
    Writer w(buffer);
    w.StartObject();
    w.Key("from");
    String(w, e.from);
    w.Key("to");
    String(w, e.to);
    w.Key("amount");
    w.Int64(e.amount);
    w.Key("currency");
    String(w, e.currency);
    w.EndObject();
    return std::string(buffer.GetString(), buffer.GetSize());
  };
  requested.from_json =
      [](absl::string_view json) -> absl::StatusOr<TransferRequested> {
    rapidjson::Document doc;
    absl::Status parsed = cqrs::http::ParseJsonBody(json, &doc);
    if (!parsed.ok()) return parsed;
    absl::StatusOr<std::string> from = cqrs::http::RequiredString(doc, "from");
    absl::StatusOr<std::string> to = cqrs::http::RequiredString(doc, "to");
    absl::StatusOr<int64_t> amount = cqrs::http::RequiredInt64(doc, "amount");
    absl::StatusOr<std::string> currency =
        cqrs::http::RequiredString(doc, "currency");
    if (!from.ok() || !to.ok() || !amount.ok() || !currency.ok()) {
      return absl::InvalidArgumentError("malformed TransferRequested");
    }
    return TransferRequested{*std::move(from), *std::move(to), *amount,
                             *std::move(currency)};
  };
  cqrs::EventCodec<TransferFailed> failed;
  failed.name = "TransferFailed";
  failed.to_json = [](const TransferFailed& e) {
    rapidjson::StringBuffer buffer;
    Writer w(buffer);
    w.StartObject();
    w.Key("reason");
    String(w, e.reason);
    w.EndObject();
    return std::string(buffer.GetString(), buffer.GetSize());
  };
  failed.from_json =
      [](absl::string_view json) -> absl::StatusOr<TransferFailed> {
    rapidjson::Document doc;
    absl::Status parsed = cqrs::http::ParseJsonBody(json, &doc);
    if (!parsed.ok()) return parsed;
    absl::StatusOr<std::string> reason =
        cqrs::http::RequiredString(doc, "reason");
    if (!reason.ok()) return reason.status();
    return TransferFailed{*std::move(reason)};
  };
  // Registration of distinct, complete codecs cannot fail.
  r->Register(std::move(requested)).IgnoreError();
  r->Register(EmptyCodec<TransferDebited>("TransferDebited")).IgnoreError();
  r->Register(EmptyCodec<TransferCredited>("TransferCredited")).IgnoreError();
  r->Register(EmptyCodec<TransferCompleted>("TransferCompleted")).IgnoreError();
  r->Register(EmptyCodec<TransferRefunded>("TransferRefunded")).IgnoreError();
  r->Register(std::move(failed)).IgnoreError();
  return r;
}

void Apply(Transfer& t, const TransferEvent& event) {
  if (const auto* e = std::get_if<TransferRequested>(&event)) {
    t.exists = true;
    t.request = *e;
    t.status = "pending";
  } else if (std::holds_alternative<TransferDebited>(event)) {
    t.debited = true;
  } else if (std::holds_alternative<TransferCompleted>(event)) {
    t.status = "completed";
  } else if (std::holds_alternative<TransferRefunded>(event)) {
    t.refunded = true;
  } else if (const auto* e = std::get_if<TransferFailed>(&event)) {
    t.status = "failed";
    t.reason = e->reason;
  }
}

absl::Status WrongState(const Transfer& t, absl::string_view step) {
  return cqrs::http::WithErrorCode(
      absl::FailedPreconditionError(
          absl::StrCat("transfer is ", t.exists ? t.status : "missing",
                       t.debited ? " (debited)" : "", "; cannot ", step)),
      "transfer_state");
}

}  // namespace

const cqrs::EventRegistry<TransferEvent>& TransferEvents() {
  static const cqrs::EventRegistry<TransferEvent>* registry = BuildRegistry();
  return *registry;
}

const std::vector<std::string>& TransferEventTypes() {
  static const auto* types = new std::vector<std::string>{
      "TransferRequested", "TransferDebited",  "TransferCredited",
      "TransferCompleted", "TransferRefunded", "TransferFailed"};
  return *types;
}

TransferType& TransferAggregate() {
  static TransferType* type = [] {
    TransferType::Options o;
    o.category = "transfer";
    o.registry = &TransferEvents();
    o.apply = Apply;
    o.cache_capacity = 0;
    o.serialize_in_process = false;
    return new TransferType(std::move(o));
  }();
  return *type;
}

TransferType::Decide DecideRequestTransfer(std::string from, std::string to,
                                           int64_t amount,
                                           std::string currency) {
  return [request = TransferRequested{std::move(from), std::move(to), amount,
                                      std::move(currency)}](
             const Transfer& t, int64_t) -> TransferDecision {
    if (t.exists) {
      return cqrs::http::WithErrorCode(
          absl::AlreadyExistsError("transfer already exists"),
          "transfer_exists");
    }
    return std::vector<TransferEvent>{request};
  };
}

TransferType::Decide DecideDebitAndComplete() {
  return [](const Transfer& t, int64_t) -> TransferDecision {
    if (!t.exists || t.status != "pending" || t.debited) {
      return WrongState(t, "record the debit");
    }
    return std::vector<TransferEvent>{TransferDebited{}, TransferCredited{},
                                      TransferCompleted{}};
  };
}

TransferType::Decide DecideDebitRefundAndFail(std::string reason) {
  return [reason = std::move(reason)](const Transfer& t,
                                      int64_t) -> TransferDecision {
    if (!t.exists || t.status != "pending" || t.debited) {
      return WrongState(t, "record the debit");
    }
    return std::vector<TransferEvent>{TransferDebited{}, TransferRefunded{},
                                      TransferFailed{reason}};
  };
}

TransferType::Decide DecideFail(std::string reason) {
  return [reason = std::move(reason)](const Transfer& t,
                                      int64_t) -> TransferDecision {
    if (!t.exists || t.status != "pending" || t.debited) {
      return WrongState(t, "fail");
    }
    return std::vector<TransferEvent>{TransferFailed{reason}};
  };
}

TransferType::Decide DecideComplete() {
  return [](const Transfer& t, int64_t) -> TransferDecision {
    if (!t.exists || t.status != "pending" || !t.debited) {
      return WrongState(t, "complete");
    }
    return std::vector<TransferEvent>{TransferCredited{}, TransferCompleted{}};
  };
}

TransferType::Decide DecideRefundAndFail(std::string reason) {
  return [reason = std::move(reason)](const Transfer& t,
                                      int64_t) -> TransferDecision {
    if (!t.exists || t.status != "pending" || !t.debited) {
      return WrongState(t, "refund");
    }
    return std::vector<TransferEvent>{TransferRefunded{},
                                      TransferFailed{reason}};
  };
}

absl::Status ValidateTransferId(absl::string_view id) {
  if (!ValidateAccountId(id).ok()) {
    return cqrs::http::InvalidRequest(
        "transfer id must be 1 to 64 characters of [A-Za-z0-9_-]");
  }
  return absl::OkStatus();
}

}  // namespace bank
