"""The dynamic link tags of the seeds (``#dynamic_link.<name>``) and their default words.

Shared by the template checks (which names exist), the settings (which may be enabled) and
the link builder (what a link says when the configuration gives no text)."""

from __future__ import annotations

DYNAMIC_LINK_NAMES = (
    "opt_in_direct_marketing",
    "opt_out_direct_marketing",
    "opt_in_affiliate_marketing",
    "opt_out_affiliate_marketing",
    "service_request_response_acceptance",
    "service_request_temporary_resolution_acceptance",
    "service_request_final_resolution_acceptance",
)

#: What a link says, per language, when ``[links] link_text`` does not say otherwise.
DEFAULT_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "opt_in_direct_marketing": "Yes, send me offers",
        "opt_out_direct_marketing": "Unsubscribe from offers",
        "opt_in_affiliate_marketing": "Yes, send me partners' offers",
        "opt_out_affiliate_marketing": "Unsubscribe from partners' offers",
        "service_request_response_acceptance": "I accept the response",
        "service_request_temporary_resolution_acceptance": "I accept the temporary resolution",
        "service_request_final_resolution_acceptance": "I accept the final resolution",
    },
    "el": {
        "opt_in_direct_marketing": "Ναι, θέλω να λαμβάνω προσφορές",
        "opt_out_direct_marketing": "Διαγραφή από τις προσφορές",
        "opt_in_affiliate_marketing": "Ναι, θέλω προσφορές συνεργατών",
        "opt_out_affiliate_marketing": "Διαγραφή από τις προσφορές συνεργατών",
        "service_request_response_acceptance": "Αποδέχομαι την απάντηση",
        "service_request_temporary_resolution_acceptance": "Αποδέχομαι την προσωρινή λύση",
        "service_request_final_resolution_acceptance": "Αποδέχομαι την οριστική λύση",
    },
}
