"""URLconf: the agent API at the root, the Django admin at /django-admin/ (the spec owns /admin/*)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("django-admin/", admin.site.urls),
    path("", include("hosting.web.urls")),
]

handler400 = "hosting.web.views.bad_request"
handler404 = "hosting.web.views.not_found"
handler500 = "hosting.web.views.server_error"
