"""Infrastructure shared by the pmo services: event contracts, the topic registry and small
helpers (broker factory, inbox, outbox relay, migrations, logging). No business rules live here."""
