"""URLconf: the agent API at the root, the Django admin at /django-admin/ (the spec owns /admin/*)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("django-admin/", admin.site.urls),
    path("", include("hosting.urls")),
]

handler400 = "hosting.views.bad_request"
handler404 = "hosting.views.not_found"
handler500 = "hosting.views.server_error"
