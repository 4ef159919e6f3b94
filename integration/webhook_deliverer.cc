#include "integration/webhook_deliverer.h"

#include <utility>

namespace cqrs::integration {

class WebhookDeliverer::Impl {};

absl::StatusOr<std::unique_ptr<WebhookDeliverer>> WebhookDeliverer::Create(
    PgPool*, eventstore::PostgresEventStore*, const Publication*,
    WebhookDelivererOptions) {
  return std::unique_ptr<WebhookDeliverer>(
      new WebhookDeliverer(std::make_unique<Impl>()));
}

WebhookDeliverer::WebhookDeliverer(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
WebhookDeliverer::~WebhookDeliverer() { Stop(); }
void WebhookDeliverer::Start() {}
void WebhookDeliverer::Stop() {}
bool WebhookDeliverer::owner() const { return false; }
std::vector<WebhookEndpointStatus> WebhookDeliverer::Statuses() const {
  return {};
}

}  // namespace cqrs::integration
