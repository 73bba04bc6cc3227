"""Identity: who is calling, what they may do, and who may approve what.

The contract, for every face of switchback (gateway, controller, value stream, dashboard, chat,
CLI):

* **Authenticate** with one call: ``directory.authenticate(authorization_header)`` returns the
  :class:`Principal` (a user with its groups and effective roles resolved; ``.token`` names the
  token used) or None for no header, an unknown or expired token, or a disabled user. Servers hold
  a :class:`LiveDirectory` from :func:`open_directory` — ``SWITCHBACK_USERS`` (a YAML file of
  users, groups, token hashes and policies) plus ``SWITCHBACK_ADMIN_TOKENS`` (each ``name=token``
  an admin) — re-read when the file changes, at most once a second.
* **Authorize** with one call: ``authorize(principal, action)`` returns or raises
  :class:`Forbidden` saying which role the action takes. Roles: ``viewer``, ``operator``,
  ``approver``, ``admin``; the action → roles table is :data:`PERMISSIONS`.
* **Approve** by the rules of an :class:`ApprovalPolicy`: ``can_vote`` (named by the policy and
  holding the approver or admin role, not disabled, no self-approval unless allowed), ``cast``
  (one vote per person, an identical repeat changes nothing) and ``tally`` (a reject rejects;
  ``required`` distinct approvals approve).
* Tokens are ``sbt_...`` random strings shown once (:func:`new_token`); only ``sha256:<hex>`` of
  them is stored (:func:`hash_token`), and looked up by that hash.

Everything here is pure Python except ``loader`` (reading files and the environment). Bad data is
reported as a whole list of problems (:class:`Issue` with a path; :class:`Problem` with file and
line from the loader), never one at a time. ``docs/identity.md`` is the user's guide.
"""

from switchback.identity.directory import Directory, admin_token_users
from switchback.identity.errors import (
    Forbidden,
    IdentityError,
    InvalidIdentityData,
    Issue,
    Unauthenticated,
    UnknownAction,
)
from switchback.identity.loader import (
    ADMIN_TOKENS_ENV,
    USERS_ENV,
    USERS_SHAPE,
    LiveDirectory,
    UsersFileError,
    lint_users,
    load_users,
    open_directory,
    parse_admin_tokens,
)
from switchback.identity.policies import (
    ON_TIMEOUT,
    POLICY_SHAPE,
    ApprovalPolicy,
    validate_policy,
)
from switchback.identity.principals import CHAT_NETWORKS, Group, Principal, User
from switchback.identity.roles import (
    PERMISSIONS,
    ROLE_DESCRIPTIONS,
    Action,
    Permission,
    Role,
    actions_for,
    authorize,
    permitted,
)
from switchback.identity.tokens import (
    TOKEN_PREFIX,
    Token,
    bearer_token,
    hash_token,
    matches,
    new_token,
    parse_expiry,
)
from switchback.identity.voting import (
    APPROVE,
    REJECT,
    Cast,
    Party,
    Subject,
    Verdict,
    Vote,
    can_vote,
    cast,
    same_person,
    tally,
)
from switchback.yamlfile import Problem

__all__ = [
    "ADMIN_TOKENS_ENV",
    "APPROVE",
    "CHAT_NETWORKS",
    "ON_TIMEOUT",
    "PERMISSIONS",
    "POLICY_SHAPE",
    "REJECT",
    "ROLE_DESCRIPTIONS",
    "TOKEN_PREFIX",
    "USERS_ENV",
    "USERS_SHAPE",
    "Action",
    "ApprovalPolicy",
    "Cast",
    "Directory",
    "Forbidden",
    "Group",
    "IdentityError",
    "InvalidIdentityData",
    "Issue",
    "LiveDirectory",
    "Party",
    "Permission",
    "Principal",
    "Problem",
    "Role",
    "Subject",
    "Token",
    "Unauthenticated",
    "UnknownAction",
    "User",
    "UsersFileError",
    "Verdict",
    "Vote",
    "actions_for",
    "admin_token_users",
    "authorize",
    "bearer_token",
    "can_vote",
    "cast",
    "hash_token",
    "lint_users",
    "load_users",
    "matches",
    "new_token",
    "open_directory",
    "parse_admin_tokens",
    "parse_expiry",
    "permitted",
    "same_person",
    "tally",
    "validate_policy",
]
