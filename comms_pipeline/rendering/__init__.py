"""Template rendering: the interface the pipeline merges through.

``compile_template(source)`` returns a compiled template (cached by source text);
``compiled.render(context)`` returns text. ``build_context`` assembles the data a template
sees: the contact (``#contact_information.*``), the referring entities' data, the unrestricted
parameters (``#param.NAME`` or ``$param.NAME``), the formatting helpers (``$fmt``) and the
dynamic links (``#dynamic_link.*``). Failures raise :class:`TemplateError`.

The language is Velocity as airspeed implements it (``$x``, ``#if``, ``#foreach``, ``#set``,
macros) plus the seeds' tags ``#entity.field.sub`` (``\\#word.word`` keeps a literal hash).

Missing data is an error, not a blank: rendered with ``required=required_roots(referring)``, a
tag (or ``$reference``, or a ``$fmt`` value) under a referring entity, the contact, the
notification or ``#param`` that has no value (missing, null, empty text or list) raises
:class:`MissingDataError` naming every such tag. A tag of an entity the communication does not
refer to renders empty. An author marks a value optional explicitly with
``$fmt.default($bill.period, '')`` (or a fallback text), the quiet reference ``$!{bill.period}``
or ``${bill.period|'-'}``; an ``#if($bill.period)`` guard keeps its body from being rendered
(a value used only as a condition is never missing). Template syntax at a glance::

    Dear #contact_information.name,                       a tag (missing data when absent)
    your payment #payment.number of $fmt.money($payment.amount, $payment.currency)
    Balance: #payment.accounts_receivable.balance         a nested tag
    Promo: #param.promo_code                              an unrestricted parameter
    #if($payment.accounts_receivable) ... #else ... #end
    #foreach($line in $notification.bills_notified_amount) $line.number #end
    #dynamic_link.opt_out_direct_marketing                a signed link (when enabled)

``$fmt`` offers money, number, percent, date, datetime, upper, lower, capitalize, truncate,
default, yesno and join, in the contact's language. Parameter values and entity data are data:
never parsed as template code (``#evaluate``, ``#include`` and ``#parse`` are refused). Rendering
runs in a sandbox (see :mod:`.sandbox`). In an HTML body (``compile_template(source,
html=True)``) every value is HTML-escaped; the author's own text and string literals are not.
"""

from __future__ import annotations

from comms_pipeline.rendering.compiled import (
    CompiledTemplate,
    MissingDataError,
    Rendered,
    TemplateError,
    compile_template,
)
from comms_pipeline.rendering.context import build_context, required_roots, to_plain
from comms_pipeline.rendering.sandbox import Limits, SafeHtml
from comms_pipeline.rendering.tags import available_tags
from comms_pipeline.rendering.validation import Problem, missing_params, validate_template

__all__ = [
    "CompiledTemplate", "Limits", "MissingDataError", "Problem", "Rendered", "SafeHtml",
    "TemplateError", "available_tags", "build_context", "compile_template", "missing_params",
    "required_roots", "to_plain", "validate_template",
]
