"""Merges per second of the pipeline's render path against a bare airspeed merge.

The pipeline path is what the monitors do per communication: ``build_context`` (plain-data
copy of the contact, entities and parameters, formatters, dynamic links) and a render of the
compiled template through the sandboxed grammar, as an HTML body (every value escaped). The
bare path merges the same Velocity text, compiled once with the public ``airspeed`` module, into
a namespace built once. Both run in the same process, in alternating rounds.

    .venv/bin/python bench/render.py [--n 20000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import airspeed

from comms_pipeline.pipeline.links import LinkBuilder
from comms_pipeline.rendering import build_context, compile_template, required_roots, velocity
from comms_pipeline.settings.links import LinkSettings

BODY = """<p>Dear #contact_information.name,</p>
<p>We would like to inform you that your payment, with payment number
<strong>#payment.number</strong> for <strong>$fmt.money($payment.amount, $payment.currency)
</strong>, has been successfully processed on $fmt.date($payment.posted_on).</p>
#if($payment.accounts_receivable.outstanding_amount)
<p>Your account #payment.accounts_receivable.number still has
$fmt.money($payment.accounts_receivable.outstanding_amount) outstanding
(balance #payment.accounts_receivable.balance #payment.accounts_receivable.currency).</p>
#else
<p>Your account #payment.accounts_receivable.number is fully paid.</p>
#end
<table>
#foreach($line in $payment.allocations)
<tr><td>$foreach.count</td><td>$line.bill</td><td>$line.amount</td></tr>
#end
</table>
<p>Method: #payment.method, reference #payment.reference, posted by #payment.posted_by.</p>
<p>Your subscription #subscription.number (#subscription.type) stays active for
#subscription.services.</p>
<p>Customer number #contact_information.ref, email #contact_information.email.</p>
<p>#param.footer_note</p>
<p>Regards,<br>Company ZX Co.</p>
"""

CONTACT = {"id": 1001, "ref": "C-1001", "name": "Maria Georgiou", "preferred_language": "en",
           "opt_in_direct_marketing": True, "data": {"email": "maria@example.com"}}
ENTITIES = {
    "payment": {"number": "P-5001", "amount": "42.50", "currency": "EUR",
                "posted_on": "2024-10-02", "method": "card", "reference": "TX-88112",
                "posted_by": "Web portal",
                "allocations": [{"bill": "B-2024-0801", "amount": "20.00"},
                                {"bill": "B-2024-0901", "amount": "22.50"}]},
    "accounts_receivable": {"number": "AR-1001", "balance": "-42.50",
                            "outstanding_amount": "118.20", "currency": "EUR"},
    "subscription": {"number": "S-1001", "type": "Residential",
                     "services": ["TV Basic", "Sports Plus"]},
}
PARAMS = {"footer_note": "Thank you for choosing <Company ZX> & partners."}
REFERRING = ["payment", "subscription"]
#: The monitors render with the missing-data check on (a missing tag fails the merge).
REQUIRED = required_roots(REFERRING)


def pipeline_merge(links: LinkBuilder) -> str:
    context = build_context(contact=CONTACT, entities=ENTITIES, params=PARAMS,
                            referring_entities=REFERRING, links=links)
    return compile_template(BODY, html=True).render(context, required=REQUIRED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="merges per path (default 20000)")
    parser.add_argument("--rounds", type=int, default=20,
                        help="alternating rounds (default 20)")
    args = parser.parse_args()

    links = LinkBuilder(LinkSettings(), "bench-secret")
    compiled = compile_template(BODY, html=True)
    bare = airspeed.Template(compiled.velocity_source)
    bare.ensure_compiled()
    namespace = build_context(contact=CONTACT, entities=ENTITIES, params=PARAMS,
                              referring_entities=REFERRING)
    sample = pipeline_merge(links)
    assert "P-5001" in sample and "&lt;Company ZX&gt;" in sample, sample
    assert "P-5001" in bare.merge(namespace)

    per_round = max(1, args.n // args.rounds)
    bare_times, pipe_times = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            bare.merge(namespace)
        bare_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(per_round):
            pipeline_merge(links)
        pipe_times.append(time.perf_counter() - start)

    total = per_round * args.rounds
    # Each round pairs both paths in the same few seconds; the median of the paired ratios
    # is robust against other work on the machine, the best round shows the clean rate.
    ratios = sorted(b / p for b, p in zip(bare_times, pipe_times, strict=True))
    bare_rate, pipe_rate = per_round / min(bare_times), per_round / min(pipe_times)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tags = len(compiled.translation.tags)
    refs = sum(1 for _ in velocity.references(compiled.tree)) - tags
    print(f"template: {len(BODY)} chars, {tags} #tags + {refs} $references, one #if, "
          f"one #foreach; {total} merges per path, {args.rounds} alternating rounds")
    print(f"bare airspeed merge          : {bare_rate:10.0f} merges/s (best round)")
    print(f"pipeline (context + sandbox) : {pipe_rate:10.0f} merges/s (best round)")
    print(f"ratio pipeline / bare        : {ratios[len(ratios) // 2]:10.2f}  (median of "
          f"{len(ratios)} paired rounds, range {ratios[0]:.2f}-{ratios[-1]:.2f}; aim >= 0.8)")
    print(f"peak RSS                     : {rss_mb:10.1f} MB")


if __name__ == "__main__":
    main()
