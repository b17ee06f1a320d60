"""The generated pages: the workspace, and per entity its list, forms and record page.

URLs (docs/pages.md): ``/`` the workspace; ``/a/<app>/<entity>`` the list (``.json`` twin),
``/count``, ``/export.csv|.xlsx``, ``/bulk``, ``/views``, ``/lookup/<field>``; ``/new``,
``/form`` (the layout fragment), ``/workflow`` (the diagram), ``/<id>`` (``.json`` twin),
``/<id>/edit``, ``/<id>/transitions/<name>`` (the dialog; POST takes it) and
``POST /<id>/approvals/<name>`` (a decision). The more
specific routes come first: an entity's sub-paths never read as a record id.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from apps.web.pages import (
    actions,
    approvals,
    dashboards,
    detail,
    diagram,
    forms,
    lists,
    transitions,
    workspace,
)


def routes() -> list[BaseRoute]:
    entity = "/a/{app}/{entity}"
    return [
        Route("/", workspace.home, name="home"),
        # dashboards (docs/dashboards.md) before the entity routes, which would read them as an entity
        Route("/a/{app}/dashboards", dashboards.index, name="dashboards"),
        Route("/a/{app}/dashboards/{name}", dashboards.dashboard_page, name="dashboard"),
        Route("/a/{app}/dashboards/{name}/{card}.{format:str}", dashboards.export, name="dashboard_export"),
        Route("/a/{app}/-/dashboards", dashboards.index, name="dashboards_system"),
        Route("/a/{app}/-/dashboards/{name}", dashboards.dashboard_page, name="dashboard_system"),
        Route(entity, lists.list_page, name="list"),
        Route(entity + "/count", lists.count, name="list_count"),
        Route(entity + "/export.{format:str}", lists.export, name="list_export"),
        Route(entity + "/bulk", actions.bulk, methods=["POST"], name="list_bulk"),
        Route(entity + "/bulk-value", actions.bulk_value, name="list_bulk_value"),
        Route(entity + "/views", actions.save_view, methods=["POST"], name="view_save"),
        Route(entity + "/views/{view}/delete", actions.delete_view, methods=["POST"], name="view_delete"),
        Route(entity + "/lookup/{field}", actions.lookup, name="lookup"),
        Route(entity + "/new", forms.new_form, methods=["GET", "POST"], name="record_new"),
        Route(entity + "/form", forms.form_fragment, methods=["POST"], name="record_form"),
        Route(entity + "/workflow", diagram.workflow_page, name="workflow"),
        Route(entity + "/{id}/edit", forms.edit_form, methods=["GET", "POST"], name="record_edit"),
        Route(entity + "/{id}/transitions/{name}", transitions.dialog, methods=["GET", "POST"], name="record_transition"),
        Route(entity + "/{id}/approvals/{name}", approvals.decide, methods=["POST"], name="record_decide"),
        Route(entity + "/{id}", detail.detail, name="record"),
    ]
